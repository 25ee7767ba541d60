"""CowClip: adaptive column-wise clipping of embedding gradients, Algorithm 1 of Zheng et al.
(arXiv 2204.06240), in the order a reader meets it beside the paper.

Symbols: U unique ids in the batch, K embedding dim, V table rows, F sparse fields, G groups.

After the mean-over-batch gradients are computed, for each id k of the batch (a row of the shared
table: ids of different fields never share a row), with g_k its summed gradient row, w_k its
embedding row and cnt_k its number of occurrences in the batch:

    clip_k = cnt_k * max(r * ||w_k||, zeta)                       (Algorithm 1: the threshold)
    g_k   <- g_k * min(1, clip_k / ||g_k||)                        (a zero row stays zero)

then the L2 term and Adam update w_k (engine/step.py calls the pieces below in that order).

    1. the constants        clip_constants: (r, bound) of either form -> (ratio, floor)
    2. the per-row rule     clip_scale: min(1, cnt * max(ratio ||w||, floor) / ||g||), and
                            clip_scales, the same on arrays
    3. the absent rows      absent_row_scale: the reference form's clip of rows the batch lacks
    4. the L2 placement     l2_before_clip, clips_absent_rows
    5. the rule             ClipRule: CowClip and the authors' ablations as values of one type;
                            clip_rows applies it to a table's RowGrad
    6. the audit            clip_audit: how often and how hard the clip bound

Which kernel computes what (all of them call the helpers of 2 and 3):
    clip_scale         engine/kernels/cowclip.py  cowclip_rows_{cpu,cuda} (backend.cowclip_rows)
    clip_scales        engine/kernels/cowclip.py  cowclip_rows_numpy; group_clip below
    absent_row_scale   engine/kernels/adam.py     adam_table_{numpy,cpu,cuda} (backend.adam_table):
                       the dense-table Adam FUSES the absent-row clip into its pass over all V rows,
                       calling absent_row_scale per row, so no [V, K] gradient is ever made.
    group_clip         here, in NumPy/CuPy: the field and global ablations (not on a hot path).
Words (tables, weights, features, Dense, embed_optim "dense"): see engine/step.py.
"""
import math
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

from dataio.arrays import array_module_of
from engine.layers.embedding import RowGrad

# --------------------------------------------------------------------------------------------
# 1. the constants of the two forms
#
#    paper      clip_k = cnt_k * max(r * ||w_k||, zeta),          zeta = --bound
#    reference  bytedance/LargeBatchCTR clip.py: its --bound b becomes min_w = r * sqrt(K) * b,
#               and clip_k = r * cnt_k * max(||w_k||, min_w) = cnt_k * max(r ||w_k||, r * min_w)
#
# Both are cnt_k * max(ratio * ||w_k||, floor).

FORMS = ("paper", "reference")


def check_form(form: str) -> None:
    if form not in FORMS:
        raise ValueError(f"unknown CowClip form {form!r}; choose one of {FORMS}")


def clip_constants(form: str, r: float, bound: float, dim: int) -> tuple[float, float]:
    """(ratio, floor) such that clip_k = cnt_k * max(ratio * ||w_k||, floor)."""
    check_form(form)
    if form == "paper":
        return r, bound
    min_w = r * math.sqrt(dim) * bound
    return r, r * min_w


# --------------------------------------------------------------------------------------------
# 2. the per-row rule: one scalar helper, compiled by Numba for the CPU kernels and for the CUDA
#    kernels (engine/kernels/cowclip.py, engine/kernels/adam.py), so both run these lines.


@numba.njit(cache=True)
def clip_scale(grad_norm, weight_norm, count, ratio, floor):
    """min(1, cnt * max(ratio * ||w||, floor) / ||g||), and 1 for a zero gradient."""
    threshold = count * max(ratio * weight_norm, floor)
    if grad_norm > threshold:
        return threshold / grad_norm
    return 1.0


def clip_scales(grad_norm, weight_norm, counts, ratio: float, floor: float):
    """clip_scale of every row at once: grad_norm, weight_norm [U] float64, counts [U] (or 1) -> scales [U]."""
    xp = array_module_of(grad_norm)
    threshold = counts * xp.maximum(ratio * weight_norm, floor)                  # (U,)
    binds = grad_norm > threshold
    return xp.where(binds, threshold / xp.where(binds, grad_norm, 1.0), 1.0)


# --------------------------------------------------------------------------------------------
# 3. the absent-row rule of the reference form. In `dense` embedding mode the reference's
#    table-wide L2 penalty lambda * sum(W^2) gives every row of the table the gradient
#    2 * lambda * w, and its train.py clips that whole gradient: a row absent from the batch is
#    clipped as a row seen once (cnt = 1). The dense-table Adam fuses this per row.


@numba.njit(cache=True)
def absent_row_scale(weight_norm, l2, ratio, floor):
    """Clip scale of the L2-only gradient 2 * l2 * w of a row absent from the batch (cnt = 1)."""
    return clip_scale(2.0 * l2 * weight_norm, weight_norm, 1.0, ratio, floor)


# --------------------------------------------------------------------------------------------
# 4. where L2 enters. reference: Keras adds the regulariser's gradient before train.py clips,
#    so the clipped gradient is g_k + 2 lambda w_k, and in dense mode rows absent from the
#    batch are clipped too (3). paper: the L2 term 2 lambda w_k is added after the clip, and
#    absent rows are not clipped.


def l2_before_clip(form: str) -> bool:
    return form == "reference"


def clips_absent_rows(form: str) -> bool:
    return form == "reference"


# --------------------------------------------------------------------------------------------
# 5. the rule: CowClip and the CowClip authors' ablations (cowclip_const is the reference's
#    const=True branch of clip.py), as values of one type. Each scales a unit of
#    the gradient by min(1, threshold / ||unit||):
#
#    name            unit clipped                    threshold
#    cowclip         the row g_k                     cnt_k * max(r ||w_k||, zeta)      Algorithm 1
#    cowclip_nocnt   the row g_k                     max(r ||w_k||, zeta)              cnt_k := 1
#    cowclip_global  all U rows at once              max(r ||W_B||, zeta)
#    cowclip_field   the rows of field f at once     max(r ||W_{f,B}||, zeta)
#    cowclip_const   the row g_k                     cnt_k * zeta                      r ||w_k|| dropped
#
# W_B is the (U, K) block of the table's rows that occur in the batch and W_{f,B} its rows of
# field f: the group analogue of ||w_k||, the norm of the very rows the clipped gradient updates
# (a field's whole table would be dominated by the init noise of rows the batch never touches).
# The group rules have no count factor: every field occurs exactly B times in every batch, so a
# per-field count is the constant B and would only rescale r.
#
# Rows absent from the batch (3) always get the per-row rule with cnt = 1; a rule without the
# weight term gives them ratio 0 as well (the reference's dense gradient is clipped at zeta).

UNITS = ("row", "field", "global")


@dataclass(frozen=True)
class ClipRule:
    """Which clip the step applies to the embedding table (engine.step.StepConfig.rule).

    tally: an optional observer with add(counts [U], scales [U], to_host), called after each clip
    (validate/study/ablations.ClipTally); it records, it does not change the rule's math."""
    unit: str = "row"            # the unit one threshold scales: "row" (Algorithm 1), "field", "global"
    count_factor: bool = True    # cnt_k in the threshold (Algorithm 1); False: cnt_k := 1
    weight_term: bool = True     # r * ||w|| in the threshold (Algorithm 1); False: zeta alone
    tally: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"unknown clip unit {self.unit!r}; choose one of {UNITS}")
        if self.unit != "row" and self.count_factor:
            raise ValueError(f"a clip per {self.unit} has no count factor (every field occurs B times a batch)")

    def constants(self, form: str, r: float, bound: float, dim: int) -> tuple[float, float]:
        """(ratio, floor) of this rule: clip_constants, with ratio 0 when the weight term is dropped."""
        ratio, floor = clip_constants(form, r, bound, dim)
        return (ratio if self.weight_term else 0.0), floor


COWCLIP = ClipRule()
CLIP_RULES = {
    "cowclip": COWCLIP,
    "cowclip_nocnt": ClipRule(count_factor=False),
    "cowclip_global": ClipRule(unit="global", count_factor=False),
    "cowclip_field": ClipRule(unit="field", count_factor=False),
    "cowclip_const": ClipRule(weight_term=False),
}


def group_clip(row_grads, table, ids, groups, num_groups: int, ratio: float, floor: float, xp=np):
    """Clip row_grads [U, K] in place, group by group; -> scales [U] float64.

    groups [U] in [0, G): the group of each row. Group j is one row of clip_scales with cnt 1:
        scale_j = min(1, max(ratio * ||W[ids of j]||, floor) / ||g of j||)
    (a zero gradient keeps scale 1). Norms in float64."""
    grad_sq = (row_grads.astype(xp.float64) ** 2).sum(axis=1)                   # (U,)
    weight_sq = (table[ids].astype(xp.float64) ** 2).sum(axis=1)                # (U,)
    group_grad_norm = xp.sqrt(xp.bincount(groups, weights=grad_sq, minlength=num_groups))      # (G,)
    group_weight_norm = xp.sqrt(xp.bincount(groups, weights=weight_sq, minlength=num_groups))  # (G,)
    scales = clip_scales(group_grad_norm, group_weight_norm, 1, ratio, floor)[groups]          # (U,)
    row_grads *= scales[:, None].astype(row_grads.dtype)
    return scales


def clip_rows(rule: ClipRule, grad: RowGrad, table, offsets, kernels, ratio: float, floor: float):
    """Apply `rule` to a table's RowGrad in place; -> scales [U]. offsets [F]: first row of each field.
    ratio, floor: rule.constants(...). Algorithm 1 itself is clip_rows(COWCLIP, ...)."""
    xp = kernels.xp
    if rule.unit == "row":
        counts = grad.counts if rule.count_factor else xp.ones_like(grad.counts)       # (U,)
        scales = kernels.cowclip_rows(grad.rows, table, grad.ids, counts, ratio, floor)
    elif rule.unit == "field":
        offsets = xp.asarray(np.asarray(offsets, dtype=np.int64))
        field_of_row = xp.searchsorted(offsets, grad.ids, side="right") - 1            # (U,)
        scales = group_clip(grad.rows, table, grad.ids, field_of_row, len(offsets), ratio, floor, xp)
    else:
        one_group = xp.zeros(grad.ids.shape[0], dtype=xp.int64)                         # (U,)
        scales = group_clip(grad.rows, table, grad.ids, one_group, 1, ratio, floor, xp)
    if rule.tally is not None:
        rule.tally.add(grad.counts, scales, kernels.to_host)
    return scales


# --------------------------------------------------------------------------------------------
# 6. the audit: how often and how hard the clip binds, by id frequency and by field.

FREQUENCY_BUCKETS = (1, 2, 4, 16, 64, 256, 1024)  # lower edges of the cnt_k buckets


def clip_audit(grad: RowGrad, table, scales, offsets, field_names, to_host) -> dict:
    """Statistics of one step's clip (computed only when asked for, on the host).

    rows_clipped / rows: how many of the batch's ids had min(1, clip/||g||) < 1;
    by_count: per bucket of cnt_k, the number of ids, the fraction clipped and the mean and
    minimum scale; by_field: per field, the mean ||w_k|| and ||g_k|| (after the clip)."""
    scales = to_host(scales)
    counts = to_host(grad.counts)
    ids = to_host(grad.ids)
    grad_norm = np.linalg.norm(to_host(grad.rows).astype(np.float64), axis=1)
    weight_norm = np.linalg.norm(to_host(table[grad.ids]).astype(np.float64), axis=1)
    clipped = scales < 1.0
    edges = list(FREQUENCY_BUCKETS) + [np.inf]
    by_count = {}
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (counts >= low) & (counts < high)
        if inside.any():
            label = f"{low}" if high == low + 1 else f"{low}-{'inf' if high == np.inf else int(high) - 1}"
            by_count[label] = {"ids": int(inside.sum()), "clipped_fraction": float(clipped[inside].mean()),
                               "mean_scale": float(scales[inside].mean()), "min_scale": float(scales[inside].min())}
    field_of_id = np.searchsorted(np.asarray(offsets), ids, side="right") - 1
    by_field = {}
    for f, name in enumerate(field_names):
        inside = field_of_id == f
        if inside.any():
            by_field[name] = {"ids": int(inside.sum()), "clipped": int(clipped[inside].sum()),
                              "mean_weight_norm": float(weight_norm[inside].mean()),
                              "mean_grad_norm": float(grad_norm[inside].mean())}
    return {"rows": int(scales.shape[0]), "rows_clipped": int(clipped.sum()),
            "by_count": by_count, "by_field": by_field,
            "histograms": {"scale": histogram(scales, SCALE_EDGES), "grad_norm": histogram(grad_norm, NORM_EDGES),
                           "weight_norm": histogram(weight_norm, NORM_EDGES)}}


SCALE_EDGES = np.linspace(0.0, 1.0, 11)           # the clip scale in [0, 1], tenths
NORM_EDGES = np.logspace(-9, 3, 13)               # row norms, a bin per decade


def histogram(values, edges) -> dict:
    """A fixed-bin histogram of the batch's per-row values (U,), small enough for a metrics.jsonl line:
    TensorBoard's form (upper bucket limits, counts, and the moments). Values past the edges fall into
    the end buckets."""
    values = np.asarray(values, dtype=np.float64)
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    return {"min": float(values.min()) if values.size else 0.0, "max": float(values.max()) if values.size else 0.0,
            "num": int(values.size), "sum": float(values.sum()), "sum_squares": float((values ** 2).sum()),
            "limits": [float(x) for x in edges[1:]], "counts": [int(c) for c in counts]}
