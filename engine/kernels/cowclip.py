"""CowClip's per-row clip, fused with the row norms: the backend entry `cowclip_rows` that
`engine.cowclip.clip_rows` calls (Algorithm 1 of arXiv 2204.06240), whose per-row rule is
`engine.cowclip.clip_scale`.

Symbols: U = unique ids in the batch, K = embedding dim, V = table rows.

For each id k present in the batch, with g_k its summed gradient row, w_k its embedding row and
cnt_k its number of occurrences:

    threshold_k = cnt_k * max(ratio * ||w_k||, floor)
    g_k        <- g_k * min(1, threshold_k / ||g_k||)      (a zero row stays zero)

`ratio` and `floor` come from `engine.cowclip.clip_constants`, which maps the paper's (r, zeta)
and the reference code's (r, bound) onto them.

Layout: NumPy form (`clip_scales`, the vectorised `clip_scale`), Numba CPU version, Numba CUDA
version; each is the backend entry cowclip_rows(row_grads, table, ids, counts, ratio, floor) ->
scales. The CPU and CUDA kernels call `engine.cowclip.clip_scale`, so their arithmetic is the same
lines.
"""
import math

import numba
import numpy as np

from engine.cowclip import clip_scale, clip_scales
from engine.kernels.common import array_module_of, cuda, float64, for_cuda, launch


@numba.njit(cache=True)
def clip_row(row_grads, table, ids, counts, ratio, floor, scales, u):
    """Clip gradient row u in place (norms in float64), write its scale."""
    grad_sq = 0.0
    weight_sq = 0.0
    for c in range(row_grads.shape[1]):
        grad_sq += float64(row_grads[u, c]) ** 2      # float64(), not float(): see engine/kernels/common.py
        weight_sq += float64(table[ids[u], c]) ** 2
    s = clip_scale(math.sqrt(grad_sq), math.sqrt(weight_sq), counts[u], ratio, floor)
    scales[u] = s
    if s < 1.0:
        for c in range(row_grads.shape[1]):
            row_grads[u, c] *= s


# --------------------------------------------------------------------------------------------
# NumPy: engine.cowclip.clip_scales on the rows' norms


def cowclip_rows_numpy(row_grads, table, ids, counts, ratio: float, floor: float):
    """row_grads [U, K] clipped in place, table [V, K], ids [U], counts [U] -> scales [U]."""
    weight_norm = np.linalg.norm(table[ids].astype(np.float64), axis=1)   # (U,)
    grad_norm = np.linalg.norm(row_grads.astype(np.float64), axis=1)      # (U,)
    scales = clip_scales(grad_norm, weight_norm, counts, ratio, floor)
    row_grads[...] = row_grads * scales[:, None]
    return scales


# --------------------------------------------------------------------------------------------
# Numba CPU: threads over the rows


@numba.njit(parallel=True, cache=True)
def _cowclip_rows_cpu(row_grads, table, ids, counts, ratio, floor, scales):
    for u in numba.prange(row_grads.shape[0]):
        clip_row(row_grads, table, ids, counts, ratio, floor, scales, u)


def cowclip_rows_cpu(row_grads, table, ids, counts, ratio: float, floor: float):
    """As cowclip_rows_numpy."""
    scales = np.empty(row_grads.shape[0], dtype=np.float64)
    _cowclip_rows_cpu(row_grads, table, ids, counts, float(ratio), float(floor), scales)
    return scales


# --------------------------------------------------------------------------------------------
# Numba CUDA: one thread per unique id (K is small, so a row is one thread's work).


_clip_row_device = for_cuda(clip_row)


@cuda.jit
def _cowclip_rows_kernel(row_grads, table, ids, counts, ratio, floor, scales):
    u = cuda.grid(1)
    if u < row_grads.shape[0]:
        _clip_row_device(row_grads, table, ids, counts, ratio, floor, scales, u)


def cowclip_rows_cuda(row_grads, table, ids, counts, ratio: float, floor: float):
    """As cowclip_rows_numpy, on the device's arrays."""
    scales = array_module_of(row_grads).empty(row_grads.shape[0], dtype=np.float64)
    launch(_cowclip_rows_kernel, row_grads.shape[0], row_grads, table, ids, counts, float(ratio), float(floor),
           scales)
    return scales
