"""How much of a scaling grid fits a device-time budget, from step times measured on an H200.

The `gpu` preset of validate.study.scaling must run in one device call: the whole grid in 8 minutes of
H200 time (issue 18). This module turns that into a number of epochs, or a fraction of one epoch,
with the arithmetic printed so a reader can check it.

Measured step times (NVIDIA H200, DeepFM, float32; issues 14 and 18):

    batch     seconds/step   source
    1024      9.0e-3         issue 14: whole step, lazy tables (dense at V = 33.8M: 19.6e-3)
    8192      8.0e-3         issue 14: lazy, V = 33.8M (7.93e-3)
    32768     11.0e-3        issue 14: lazy, V = 33.8M (11.27e-3)
    131072    42.3e-3        issue 18: end to end at about 3.1M samples/s (131072 / 3.1e6)

At small batch the step is bound by kernel launches, not by the table, so the lazy times hold for
any vocabulary. Dense-table Adam (the reference's, and the preset's) also reads and writes every
table row each step: 10.9e-3 s at V = 33,762,577 rows (issue 14, `adam_table`), so we add
10.9e-3 * V / 33,762,577 per step. At the synthetic set's V = 337,630 that is 0.11 ms; at
Criteo's own V it would double the 1K step, which is one reason the preset keeps the synthetic
family's vocabulary. Between measured batch sizes the time is interpolated in log-log; below the
smallest it is the smallest's (launch-bound), above the largest it grows with the batch.

Two costs were not measured and are assumptions (replace them with the wall times the first device
run records in results.jsonl): RUN_OVERHEAD_S per run (model init, moving the splits to the GPU,
the first kernels' compilation) and EVAL_S per evaluation (forward over the test split, AUC).

Budget rule (validate.study.scaling's `gpu` preset): every run of the grid trains on the same number of
samples, as the paper's table does (same epochs at every batch size):
  1. the largest number of full epochs E <= max_epochs for which the grid fits, else
  2. one pass over a fraction f < 1 of the training split, the largest that fits: each run stops
     after floor(f * steps_per_epoch) updates (engine.train's max_steps). The reader shuffles each
     epoch (the shards' order and the rows within them) and the synthetic rows are i.i.d., so the
     first f of an epoch is a random subsample of the training rows.
The rule never gives the base batch fewer samples than the others: a baseline trained on less
would make every gap look better than it is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

H200_STEP_SECONDS = {1024: 9.0e-3, 8192: 8.0e-3, 32768: 11.0e-3, 131072: 131072 / 3.1e6}
DENSE_ADAM_SECONDS_PER_ROW = 10.9e-3 / 33_762_577
RUN_OVERHEAD_S = 4.0     # assumed, not measured
EVAL_S = 1.0             # assumed, not measured


def step_seconds(bs: int, vocab_rows: int, embed_optim: str = "dense",
                 measured: dict = H200_STEP_SECONDS) -> float:
    """Seconds of one update at batch bs: the measured time, log-log interpolated, plus dense Adam."""
    sizes = sorted(measured)
    if bs <= sizes[0]:
        t = measured[sizes[0]]
    elif bs >= sizes[-1]:
        t = measured[sizes[-1]] * bs / sizes[-1]
    else:
        hi = next(b for b in sizes if b >= bs)
        lo = sizes[sizes.index(hi) - 1]
        w = math.log(bs / lo) / math.log(hi / lo)
        t = math.exp((1 - w) * math.log(measured[lo]) + w * math.log(measured[hi]))
    if embed_optim == "dense":
        t += DENSE_ADAM_SECONDS_PER_ROW * vocab_rows
    return t


@dataclass
class Plan:
    epochs: int            # full epochs of every run (1 when fraction < 1)
    fraction: float        # share of one epoch each run trains when < 1; 1.0 for full epochs
    seconds: float         # estimated device seconds of the whole grid under this plan
    full_epoch_seconds: float   # ... of one full epoch of every run
    budget_s: float
    lines: list            # the arithmetic, one line per batch size, for printing

    def max_steps(self, steps_per_epoch: int) -> int:
        """engine.train's max_steps for a run: 0 (no cap) for full epochs."""
        return 0 if self.fraction >= 1.0 else max(1, math.floor(self.fraction * steps_per_epoch))


def grid_seconds(runs: list, train_rows: int, vocab_rows: int, epochs: float, evals_per_run: int) -> float:
    """Estimated seconds of `runs` [(bs, embed_optim)] each training `epochs` (may be < 1)."""
    total = 0.0
    for bs, optim in runs:
        steps = math.ceil(train_rows / bs)
        total += RUN_OVERHEAD_S + evals_per_run * EVAL_S + epochs * steps * step_seconds(bs, vocab_rows, optim)
    return total


def plan_budget(runs: list, train_rows: int, vocab_rows: int, budget_s: float, max_epochs: int = 10) -> Plan:
    """The budget rule of the module docstring for `runs` [(bs, embed_optim), ...] -> Plan."""
    full = grid_seconds(runs, train_rows, vocab_rows, 1, 1)
    lines = []
    for bs in sorted({bs for bs, _ in runs}):
        mine = [r for r in runs if r[0] == bs]
        steps = math.ceil(train_rows / bs)
        per_run = steps * step_seconds(bs, vocab_rows, mine[0][1])
        lines.append(f"  batch {bs:>6}: {len(mine):>2} runs x {steps:>6,} steps/epoch x "
                     f"{1e3 * step_seconds(bs, vocab_rows, mine[0][1]):5.2f} ms = {len(mine) * per_run:7.1f} s/epoch")
    longest = grid_seconds(runs, train_rows, vocab_rows, max_epochs, max_epochs)
    lines.append(f"  plus {RUN_OVERHEAD_S:g} s per run and {EVAL_S:g} s per evaluation (assumed): one full epoch of "
                 f"the grid {full:,.0f} s, {max_epochs} epochs {longest:,.0f} s")
    for epochs in range(max_epochs, 0, -1):
        seconds = grid_seconds(runs, train_rows, vocab_rows, epochs, epochs)
        if seconds <= budget_s:
            return Plan(epochs, 1.0, seconds, full, budget_s, lines)
    fixed = grid_seconds(runs, train_rows, vocab_rows, 0, 1)
    if fixed >= budget_s:
        raise ValueError(f"a budget of {budget_s:g} s does not even cover the {len(runs)} runs' fixed costs "
                         f"({fixed:.0f} s)")
    fraction = math.floor(100 * (budget_s - fixed) / (full - fixed)) / 100   # whole percent, rounded down
    if fraction <= 0:
        raise ValueError(f"a budget of {budget_s:g} s leaves less than 1 % of an epoch per run")
    seconds = grid_seconds(runs, train_rows, vocab_rows, fraction, 1)
    return Plan(1, fraction, seconds, full, budget_s, lines)


def describe(plan: Plan, train_rows: int) -> str:
    """The plan and its arithmetic, for the console and table.md."""
    head = (f"device-time plan (H200 step times, validate/study/budget.py) for a budget of {plan.budget_s:g} s:")
    if plan.fraction >= 1.0:
        verdict = f"  -> {plan.epochs} full epochs of every run, about {plan.seconds:,.0f} s"
    else:
        verdict = (f"  -> one full epoch of the grid does not fit: every run trains one pass over {plan.fraction:.0%} "
                   f"of the {train_rows:,} training rows ({math.floor(plan.fraction * train_rows):,} rows, the same "
                   f"for every batch size), about {plan.seconds:,.0f} s")
    return "\n".join([head, *plan.lines, verdict])
