"""Checks that stop a run that cannot be right, before it starts or at the step it goes wrong.

Divergence. The run stops at global step n, naming n and the checkpoint on disk, when
    step n's loss is not finite, or exceeds LOSS_LIMIT = 100 ln 2 (about 69.3), or
    after step n's update any parameter or Adam moment holds an inf or a nan.
Both are read after the update, in one device-to-host copy (`divergence`): the loss and, on the
cuda backend, the flag its Adam kernels set when they store an inf or a nan (no pass over the
arrays: they cover every parameter and moment, each written by them every step, or unchanged since
the last check), elsewhere one float64 sum of every array's sum; an update that fails is never saved.
Why 100 ln 2: the binary log loss of predicting 1/2 everywhere is ln 2, and a model that starts
near that (every model here starts with logits near 0) only reaches 100 times it when its mean
logit is wrong by about 70 on every row: the updates have blown up. A moment of inf alone does not
show in the loss (Adam divides by sqrt(v)), so the arrays are checked too, at every step: a sum
per array, which is inf or nan when any element is, and the sum of those sums (DeepFM at V = 337,630, K = 10: 11-19 ms a
step measured on the loaded 2-core machine, under 1 % of its 2.1 s step).

Set-up. A train split with no rows, or a --bs larger than it, is refused: hyperparameters are
scaled for --bs (engine/scaling.py), so a batch that can never be that large trains with the wrong
ones. A configuration whose CowClip threshold is zero for every row is warned about.
"""
import math
from pathlib import Path

import numpy as np

from engine.run.errors import Diverged

LOSS_LIMIT = 100 * math.log(2)


def loss_problem(loss: float) -> str | None:
    """Why this loss stops the run, or None."""
    if not math.isfinite(loss):
        return f"non-finite loss ({loss})"
    if loss > LOSS_LIMIT:
        return f"exploding loss ({loss:.4g} > {LOSS_LIMIT:.1f} = 100 ln 2, the limit in engine/run/guards.py)"
    return None


def divergence(loss, params: dict, state, kernels) -> tuple[float, str | None]:
    """-> (the loss as a host float, why the run stops or None), with one device-to-host copy: the
    loss (a device scalar on a GPU) beside a non-finite indicator of the parameters and moments.
    The indicator is the flag that the cuda backend's Adam kernels set when they store an inf or a
    nan (kernels.non_finite; then cleared on the device), else the float64 sum of every array's
    float64 sum, reduced on the device. Only when it fires are the arrays named (slow path)."""
    xp = kernels.xp
    flag = getattr(kernels, "non_finite", None)
    flag = flag.array if flag is not None else None
    with np.errstate(all="ignore"):  # inf + -inf is the nan this looks for, not a problem to warn about
        if flag is not None:
            indicator = xp.where(flag[0] != 0, xp.nan, 0.0)
        else:
            arrays = [*params.values(), *state.m.values(), *state.v.values()]
            indicator = xp.stack([a.sum(dtype=xp.float64) for a in arrays]).sum()
        loss, indicator = (float(x) for x in kernels.to_host(xp.stack([xp.asarray(loss, dtype=xp.float64),
                                                                           xp.asarray(indicator, dtype=xp.float64)])))
    if flag is not None:
        flag[...] = 0
    problem = loss_problem(loss)
    if problem is None and not math.isfinite(indicator):
        bad = non_finite_state(params, state, xp)
        problem = (f"{len(bad)} parameter or Adam moment array(s) hold inf or nan after the update "
                   f"({', '.join(bad[:3])})")
    return loss, problem


def non_finite_state(params: dict, state, xp) -> list:
    """Names of the parameters and Adam moments (`m/<name>`, `v/<name>`) holding an inf or a nan.

    A float sum is non-finite if any element is (or if the finite values overflow it, which at
    float32's 3.4e38 is divergence too); the exact element-wise test runs only on a flagged array."""
    arrays = {**params, **{f"m/{k}": a for k, a in state.m.items()}, **{f"v/{k}": a for k, a in state.v.items()}}
    with np.errstate(all="ignore"):  # inf + -inf is the nan this looks for, not a problem to warn about
        flagged = [name for name, a in arrays.items() if not math.isfinite(float(a.sum()))]
    return [name for name in flagged if not bool(xp.isfinite(arrays[name]).all())] or flagged


def check_train_rows(train_rows: int, bs: int, data: str) -> None:
    """Refuse a train split with no rows, and a batch larger than the split (see the module docstring)."""
    if train_rows == 0:
        raise ValueError(f"{data}: the train split has no rows; nothing to train on (re-run preprocessing with "
                         f"more data or a smaller test fraction)")
    if bs > train_rows:
        raise ValueError(f"--bs {bs} is larger than the {train_rows} training rows of {data}: every batch would "
                         f"hold {train_rows} rows while lr, l2 and the clip are scaled for {bs}; use --bs "
                         f"{train_rows} or less")


def zero_clip_warning(clip: float, bound: float, init_stddev: float, has_embed_table: bool) -> str | None:
    """The CowClip threshold cnt * max(r ||w||, zeta) (reference form: r cnt max(||w||, r sqrt(K) bound))
    is zero for every row when the floor is zero and the rows start at zero: the clip then zeroes every
    gradient, so the rows stay at zero for the whole run."""
    if clip > 0 and bound == 0 and init_stddev == 0 and has_embed_table:
        return ("warning: --bound 0 with --init_stddev 0 makes the CowClip threshold zero for every embedding "
                "row, so the embeddings never move; give --bound > 0, --init_stddev > 0 or --clip 0")
    return None


def diverged(problem: str, step: int, epoch: int, step_in_epoch: int, loss: float, checkpoint_step: int | None,
             out: Path) -> Diverged:
    """The error that stops a run at the step that went wrong, naming the checkpoint really on disk. It
    carries the step and its loss (None when not finite): the scaling study records a diverged cell."""
    if checkpoint_step is None:
        kept = "no checkpoint had been written yet"
    else:
        kept = f"the last good checkpoint (global step {checkpoint_step}) is kept in {out / 'checkpoint'}"
    return Diverged(f"{problem} at global step {step} (epoch {epoch + 1}, batch {step_in_epoch}); {kept}",
                    step=step, loss=loss if math.isfinite(loss) else None)
