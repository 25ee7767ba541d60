"""CowClip: adaptive column-wise clipping of embedding gradients (Zheng et al., arXiv 2204.06240,
Algorithm 1). Symbols: U unique ids in the batch, K embedding dim, V table rows.

After the mean-over-batch gradients are computed, for each id k of the batch (a row of the shared
table: ids of different fields never share a row), with g_k its summed gradient row, w_k its
embedding row and cnt_k its number of occurrences in the batch:

    clip_k = cnt_k * max(r * ||w_k||, zeta)                       (Algorithm 1, line "clip")
    g_k   <- g_k * min(1, clip_k / ||g_k||)                        (a zero row stays zero)

Two forms, which differ in the threshold's floor and in where L2 enters (engine/step.py):

    paper      clip_k = cnt_k * max(r * ||w_k||, zeta),        zeta = --bound;
               the L2 term 2 * lambda * w_k is added after the clip.
    reference  bytedance/LargeBatchCTR clip.py + train.py: its --bound b becomes
               min_w = r * sqrt(K) * b, and clip_k = r * cnt_k * max(||w_k||, min_w);
               the table-wide L2 is part of the gradient that is clipped.

Both are cnt_k * max(ratio * ||w_k||, floor): `clip_constants` gives (ratio, floor) for each.
The 1-dimensional linear table is not clipped (as the reference code); dense weights never are.
"""
import math

import numpy as np

from engine.layers.embedding import RowGrad

FORMS = ("paper", "reference")


def clip_constants(form: str, r: float, bound: float, dim: int) -> tuple[float, float]:
    """(ratio, floor) such that clip_k = cnt_k * max(ratio * ||w_k||, floor)."""
    if form == "paper":
        return r, bound
    if form == "reference":
        min_w = r * math.sqrt(dim) * bound
        return r, r * min_w
    raise ValueError(f"unknown CowClip form {form!r}; choose one of {FORMS}")


def cowclip(grad: RowGrad, table, kernels, ratio: float, floor: float):
    """Clip grad.rows in place; -> scales (U,), min(1, clip_k / ||g_k||) of each row."""
    return kernels.cowclip_rows(grad.rows, table, grad.ids, grad.counts, ratio, floor)


# --------------------------------------------------------------------------------------------
# The audit view: how often and how hard the clip binds, by id frequency and by field.

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
    field = np.searchsorted(np.asarray(offsets), ids, side="right") - 1
    by_field = {}
    for f, name in enumerate(field_names):
        inside = field == f
        if inside.any():
            by_field[name] = {"ids": int(inside.sum()), "clipped": int(clipped[inside].sum()),
                              "mean_weight_norm": float(weight_norm[inside].mean()),
                              "mean_grad_norm": float(grad_norm[inside].mean())}
    return {"rows": int(scales.shape[0]), "rows_clipped": int(clipped.sum()),
            "by_count": by_count, "by_field": by_field}
