"""The CowClip authors' ablations, as clip rules that plug into engine.step from outside.

Symbols: U unique ids in the batch, K embedding dim, F sparse fields, V table rows, G groups.

For id k of the batch: g_k its summed gradient row (U, K), w_k its embedding row, cnt_k its
occurrences in the batch; r = --clip, zeta = the floor from `engine.cowclip.clip_constants`
(in the reference form zeta = r * r * sqrt(K) * bound). Each rule scales a unit of the
gradient by min(1, threshold / ||unit||):

    rule            unit clipped                    threshold
    cowclip         the row g_k                     cnt_k * max(r ||w_k||, zeta)      Algorithm 1
    cowclip_nocnt   the row g_k                     max(r ||w_k||, zeta)              cnt_k := 1
    cowclip_global  all U rows at once              max(r ||W_B||, zeta)
    cowclip_field   the rows of field f at once     max(r ||W_{f,B}||, zeta)
    cowclip_const   the row g_k                     cnt_k * zeta                      r ||w_k|| dropped

W_B is the (U, K) block of the table's rows that occur in the batch and W_{f,B} its rows of
field f: the group analogue of CowClip's ||w_k||, which is the norm of the very rows the clipped
gradient updates. (The norm of a field's whole table would be dominated by the init noise of rows
the batch never touches, sqrt(V_f K) * init_stddev, and would grow with the vocabulary.) The group
rules have no count factor: every field occurs exactly B times in every batch, so a per-field
"count" is the constant B and would only rescale r.

`cowclip_const` is the reference code's `const=True` branch of clip.py (clipnorm = min_w, still
multiplied by the counts). It is installed by making the step see ratio 0, so that in `dense`
embedding mode the rows absent from the batch (whose gradient is the table-wide L2 term, counted
once) are also clipped at zeta, as the reference's dense TF gradient is. The group rules leave the
absent rows to the kernel's per-row rule (threshold max(r ||w_k||, zeta), which 2 lambda ||w_k||
never exceeds while 2 lambda < r): their norms are taken over the batch's rows only.

`clip_rule(...)` gives a rule's hooks for engine.step.apply_gradients / engine.train.run
(`clip`, `constants`); its clip also tallies how often the clip binds, by id frequency
(`ClipTally`).
"""
from __future__ import annotations

import numpy as np

from engine.cowclip import FREQUENCY_BUCKETS, clip_constants, cowclip

ABLATIONS = ("cowclip_nocnt", "cowclip_global", "cowclip_field", "cowclip_const")
CLIP_RULES = ("cowclip",) + ABLATIONS


# --------------------------------------------------------------------------------------------
# the clip functions; each has engine.cowclip.cowclip's signature and clips grad.rows in place


def cowclip_nocnt(grad, table, kernels, ratio: float, floor: float):
    """Per-row clip at max(ratio ||w_k||, floor): CowClip with every cnt_k set to 1."""
    ones = kernels.xp.ones_like(grad.counts)                                     # (U,)
    return kernels.cowclip_rows(grad.rows, table, grad.ids, ones, ratio, floor)


def group_clip_reference(row_grads, table, ids, groups, num_groups: int, ratio: float, floor: float, xp=np):
    """Clip row_grads (U, K) in place, group by group; -> scales (U,) float64.

    groups (U,) in [0, G): the group of each row. For group j:
        threshold_j = max(ratio * ||W[ids of j]||, floor),  scale_j = min(1, threshold_j / ||g of j||)
    (a zero gradient keeps scale 1). Norms in float64."""
    grad_sq = (row_grads.astype(xp.float64) ** 2).sum(axis=1)                   # (U,)
    weight_sq = (table[ids].astype(xp.float64) ** 2).sum(axis=1)                # (U,)
    group_grad_norm = xp.sqrt(xp.bincount(groups, weights=grad_sq, minlength=num_groups))      # (G,)
    group_weight_norm = xp.sqrt(xp.bincount(groups, weights=weight_sq, minlength=num_groups))  # (G,)
    threshold = xp.maximum(ratio * group_weight_norm, floor)                    # (G,)
    binds = group_grad_norm > threshold
    group_scale = xp.where(binds, threshold / xp.where(binds, group_grad_norm, 1.0), 1.0)       # (G,)
    scales = group_scale[groups]                                                # (U,)
    row_grads *= scales[:, None].astype(row_grads.dtype)
    return scales


def make_field_clip(offsets):
    """-> clip function for `cowclip_field`; offsets (F,) are the first table row of each field."""
    offsets = np.asarray(offsets, dtype=np.int64)

    def cowclip_field(grad, table, kernels, ratio: float, floor: float):
        xp = kernels.xp
        field = xp.searchsorted(xp.asarray(offsets), grad.ids, side="right") - 1   # (U,) field of each row
        return group_clip_reference(grad.rows, table, grad.ids, field, len(offsets), ratio, floor, xp)

    return cowclip_field


def cowclip_global(grad, table, kernels, ratio: float, floor: float):
    """One clip of all the batch's embedding rows together (global-norm clipping)."""
    xp = kernels.xp
    one_group = xp.zeros(grad.ids.shape[0], dtype=xp.int64)                     # (U,)
    return group_clip_reference(grad.rows, table, grad.ids, one_group, 1, ratio, floor, xp)


def _constant_clip_constants(form: str, r: float, bound: float, dim: int) -> tuple[float, float]:
    """engine.cowclip.clip_constants with the weight-norm term dropped: (0, floor)."""
    _, floor = clip_constants(form, r, bound, dim)
    return 0.0, floor



# --------------------------------------------------------------------------------------------
# the audit tally


class ClipTally:
    """Counts, over a run, how many (step, id) pairs the clip scaled down, by bucket of cnt_k.

    Buckets are engine.cowclip.FREQUENCY_BUCKETS (lower edges 1, 2, 4, 16, ...), and each epoch
    is kept apart so the warm-up epoch can be told from the rest. Cheap: one bincount per step."""

    def __init__(self, steps_per_epoch: int, first_step: int = 0):
        self.steps_per_epoch = max(int(steps_per_epoch), 1)
        self.step = int(first_step)
        self.edges = np.asarray(FREQUENCY_BUCKETS, dtype=np.int64)
        self.epochs: dict[int, dict[str, np.ndarray]] = {}

    def labels(self) -> list[str]:
        edges = list(FREQUENCY_BUCKETS) + [None]
        return [f"{lo}" if hi == lo + 1 else f"{lo}-{hi - 1 if hi else 'inf'}" for lo, hi in zip(edges[:-1], edges[1:])]

    def add(self, counts, scales, to_host) -> None:
        counts, scales = to_host(counts), to_host(scales)
        bucket = np.searchsorted(self.edges, counts, side="right") - 1          # (U,)
        n = len(self.edges)
        epoch = self.step // self.steps_per_epoch
        acc = self.epochs.setdefault(epoch, {"ids": np.zeros(n, np.int64), "clipped": np.zeros(n, np.int64),
                                             "scale_sum": np.zeros(n)})
        acc["ids"] += np.bincount(bucket, minlength=n)
        acc["clipped"] += np.bincount(bucket, weights=(scales < 1.0), minlength=n).astype(np.int64)
        acc["scale_sum"] += np.bincount(bucket, weights=scales, minlength=n)
        self.step += 1

    @staticmethod
    def _summary(ids, clipped, scale_sum, labels) -> dict:
        return {label: {"ids": int(i), "clipped_fraction": float(c / i), "mean_scale": float(s / i)}
                for label, i, c, s in zip(labels, ids, clipped, scale_sum) if i}

    def summary(self) -> dict:
        """{"all": {bucket: {ids, clipped_fraction, mean_scale}}, "by_epoch": {"1": {...}, ...}}."""
        labels = self.labels()
        if not self.epochs:
            return {}
        total = {k: sum(acc[k] for acc in self.epochs.values()) for k in ("ids", "clipped", "scale_sum")}
        overall = total["clipped"].sum() / max(total["ids"].sum(), 1)
        return {"clipped_fraction": float(overall), "all": self._summary(total["ids"], total["clipped"],
                                                                         total["scale_sum"], labels),
                "by_epoch": {str(e + 1): self._summary(acc["ids"], acc["clipped"], acc["scale_sum"], labels)
                             for e, acc in sorted(self.epochs.items())}}


# --------------------------------------------------------------------------------------------
# installing a rule


def clip_function(rule: str, offsets):
    """The function engine.step should call in place of engine.cowclip.cowclip under `rule`."""
    if rule in ("cowclip", "cowclip_const"):
        return cowclip
    if rule == "cowclip_nocnt":
        return cowclip_nocnt
    if rule == "cowclip_global":
        return cowclip_global
    if rule == "cowclip_field":
        return make_field_clip(offsets)
    raise ValueError(f"unknown clip rule {rule!r}; choose one of {CLIP_RULES}")


def clip_rule(rule: str, offsets, tally: ClipTally | None = None, to_host=np.asarray) -> dict:
    """The clip hooks of engine.step.apply_gradients (and engine.train.run) under `rule`:
    {"clip": row clip that also tallies its scales, "constants": its (ratio, floor)}."""
    clip = clip_function(rule, offsets)

    def clip_and_tally(grad, table, kernels, ratio, floor):
        scales = clip(grad, table, kernels, ratio, floor)
        if tally is not None:
            tally.add(grad.counts, scales, to_host)
        return scales

    constants = _constant_clip_constants if rule == "cowclip_const" else clip_constants
    return {"clip": clip_and_tally, "constants": constants}
