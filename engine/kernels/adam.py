"""Adam on embedding tables: the rows of a batch (`lazy`) or every row of the table (`dense`).

Symbols: V = table rows, K = columns of a row, U = unique ids in the batch.

The update is Keras's Adam (the reference code's optimizer), per element:

    m <- beta1 * m + (1 - beta1) * g
    v <- beta2 * v + (1 - beta2) * g^2
    w <- w - lr_t * m / (sqrt(v) + eps),    lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)

`adam_rows` (lazy) touches only the U rows of the batch, whose gradient rows are given.
`adam_table` (dense) touches all V rows, as Keras does when an L2 penalty lambda * sum(W^2)
makes the table's gradient dense: a row of the batch gets its given gradient row (L2 and clip
already applied by the caller), any other row gets 2 * lambda * w, clipped as a row seen once
when `clip_absent` is set (the reference form clips the whole table's gradient). That clip is
`engine.cowclip.absent_row_scale`, fused here into the pass over all V rows; absent_ratio 0 is a
real value: a threshold of the floor alone.

Layout: NumPy reference, Numba CPU version, Numba CUDA version with its launcher; the CPU and
CUDA kernels share `adam_element` and `engine.cowclip.absent_row_scale`, except the CPU
dense-table kernel, which computes in the table's dtype (`adam_element_typed`) for speed.
"""
import math

import numba
import numpy as np

from engine.cowclip import absent_row_scale
from engine.kernels.common import array_module_of, cuda, float64, for_cuda, launch


@numba.njit(cache=True)
def adam_element(w, m, v, g, lr_t, beta1, beta2, eps):
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g * g
    w = w - lr_t * m / (math.sqrt(v) + eps)
    return w, m, v


@numba.njit(cache=True)
def update_table_row(table, m, v, r, u, row_grads, l2, clip_absent, absent_ratio, absent_floor,
                     lr_t, beta1, beta2, eps):
    """Adam on table row r: gradient row u if r is in the batch (u >= 0), else its L2 term
    (clipped by engine.cowclip.absent_row_scale when clip_absent)."""
    if u >= 0:
        for c in range(table.shape[1]):
            table[r, c], m[r, c], v[r, c] = adam_element(
                table[r, c], m[r, c], v[r, c], row_grads[u, c], lr_t, beta1, beta2, eps)
        return
    s = 2.0 * l2
    if clip_absent:
        weight_sq = 0.0
        for c in range(table.shape[1]):
            weight_sq += float64(table[r, c]) ** 2
        s *= absent_row_scale(math.sqrt(weight_sq), l2, absent_ratio, absent_floor)
    for c in range(table.shape[1]):
        table[r, c], m[r, c], v[r, c] = adam_element(
            table[r, c], m[r, c], v[r, c], s * table[r, c], lr_t, beta1, beta2, eps)


# --------------------------------------------------------------------------------------------
# NumPy reference (in place, like the kernels)


def adam_rows_reference(table, m, v, ids, row_grads, lr_t, beta1, beta2, eps):
    g = row_grads
    m[ids] = beta1 * m[ids] + (1.0 - beta1) * g
    v[ids] = beta2 * v[ids] + (1.0 - beta2) * g * g
    table[ids] -= lr_t * m[ids] / (np.sqrt(v[ids]) + eps)


def adam_table_reference(table, m, v, ids, row_grads, l2, clip_absent, absent_ratio, absent_floor,
                         lr_t, beta1, beta2, eps):
    g = 2.0 * l2 * table                                            # (V, K)
    if clip_absent:  # engine.cowclip.absent_row_scale, vectorised
        weight_norm = np.linalg.norm(table.astype(np.float64), axis=1)   # (V,)
        threshold = np.maximum(absent_ratio * weight_norm, absent_floor)
        grad_norm = 2.0 * l2 * weight_norm
        binds = grad_norm > threshold
        g = g * np.where(binds, threshold / np.where(binds, grad_norm, 1.0), 1.0)[:, None]
    g = g.astype(table.dtype)
    g[ids] = row_grads
    m[...] = beta1 * m + (1.0 - beta1) * g
    v[...] = beta2 * v + (1.0 - beta2) * g * g
    table -= lr_t * m / (np.sqrt(v) + eps)


# --------------------------------------------------------------------------------------------
# Numba CPU


@numba.njit(parallel=True, cache=True)
def adam_rows_cpu(table, m, v, ids, row_grads, lr_t, beta1, beta2, eps):
    for u in numba.prange(ids.shape[0]):
        r = ids[u]
        for c in range(table.shape[1]):
            table[r, c], m[r, c], v[r, c] = adam_element(
                table[r, c], m[r, c], v[r, c], row_grads[u, c], lr_t, beta1, beta2, eps)


@numba.njit(cache=True)
def adam_element_typed(w, m, v, g, lr_t, beta1, one_minus_beta1, beta2, one_minus_beta2, eps):
    """adam_element with every operand already in the table's dtype, so float32 tables get
    float32 arithmetic (as Keras's own kernel does), which LLVM vectorises."""
    m = beta1 * m + one_minus_beta1 * g
    v = beta2 * v + one_minus_beta2 * g * g
    w = w - lr_t * m / (np.sqrt(v) + eps)
    return w, m, v


@numba.njit(parallel=True, cache=True)
def _adam_table_cpu(table, m, v, position, row_grads, l2, clip_absent, absent_ratio, absent_floor,
                    lr_t, beta1, beta2, eps):
    """update_table_row on every row, in the table's dtype: at V = 33.8M a float32 table is
    7-8x faster this way than through update_table_row's float64 arithmetic (validate/speed/bench.py
    --ab). The row norm of the absent-row clip is still summed in float64."""
    cast = table.dtype.type
    b1, omb1, b2, omb2 = cast(beta1), cast(1.0 - beta1), cast(beta2), cast(1.0 - beta2)
    lr, ep = cast(lr_t), cast(eps)
    K = table.shape[1]
    for r in numba.prange(table.shape[0]):
        u = position[r]
        if u >= 0:
            for c in range(K):
                table[r, c], m[r, c], v[r, c] = adam_element_typed(
                    table[r, c], m[r, c], v[r, c], row_grads[u, c], lr, b1, omb1, b2, omb2, ep)
            continue
        scale = 1.0
        if clip_absent:
            weight_sq = 0.0
            for c in range(K):
                weight_sq += float64(table[r, c]) ** 2
            scale = absent_row_scale(math.sqrt(weight_sq), l2, absent_ratio, absent_floor)
        s = cast(2.0 * l2 * scale)
        for c in range(K):
            table[r, c], m[r, c], v[r, c] = adam_element_typed(
                table[r, c], m[r, c], v[r, c], s * table[r, c], lr, b1, omb1, b2, omb2, ep)


def row_positions(xp, num_rows: int, ids):
    """position [V]: u where ids[u] == r, else -1."""
    position = xp.full(num_rows, -1, dtype=xp.int32)
    position[ids] = xp.arange(ids.shape[0], dtype=xp.int32)
    return position


class TableAdam:
    """The dense-table Adam on the CPU (`_adam_table_cpu`), with its [V] position map kept across
    calls instead of made each step (at V = 33.8M that is 135 MB written twice per table per
    step). Between calls every entry is -1; a call sets the batch's U entries and puts them back
    to -1 when it is done."""

    def __init__(self):
        self._position = np.empty(0, dtype=np.int32)

    def __call__(self, table, m, v, ids, row_grads, l2, clip_absent, absent_ratio, absent_floor,
                 lr_t, beta1, beta2, eps):
        if self._position.shape[0] < table.shape[0]:
            self._position = np.full(table.shape[0], -1, dtype=np.int32)
        position = self._position[:table.shape[0]]
        position[ids] = np.arange(ids.shape[0], dtype=np.int32)
        try:
            _adam_table_cpu(table, m, v, position, row_grads, l2, clip_absent, absent_ratio, absent_floor,
                            lr_t, beta1, beta2, eps)
        finally:
            position[ids] = -1


# --------------------------------------------------------------------------------------------
# Numba CUDA: one thread per element for rows, one thread per row for the table (the absent
# rows' clip needs the row norm).


_adam_element_device = for_cuda(adam_element)
_update_table_row_device = for_cuda(update_table_row)
_absent_row_scale_device = for_cuda(absent_row_scale)


@cuda.jit
def _adam_rows_kernel(table, m, v, ids, row_grads, lr_t, beta1, beta2, eps):
    t = cuda.grid(1)
    k = table.shape[1]
    if t < ids.shape[0] * k:
        u = t // k
        c = t - u * k
        r = ids[u]
        table[r, c], m[r, c], v[r, c] = _adam_element_device(
            table[r, c], m[r, c], v[r, c], row_grads[u, c], lr_t, beta1, beta2, eps)


@cuda.jit
def _adam_table_kernel(table, m, v, position, row_grads, l2, clip_absent, absent_ratio, absent_floor,
                       lr_t, beta1, beta2, eps):
    r = cuda.grid(1)
    if r < table.shape[0]:
        _update_table_row_device(table, m, v, r, position[r], row_grads, l2,
                                 clip_absent, absent_ratio, absent_floor, lr_t, beta1, beta2, eps)


MAX_ROW_WIDTH = 64      # K up to which TableAdamCuda keeps a row in registers


@cuda.jit
def _adam_table_rows_kernel(table, m, v, position, row_grads, l2, clip_absent, absent_ratio, absent_floor,
                            lr_t, beta1, beta2, eps):
    """update_table_row with the row held in a local array: each row of table, m and v is read
    once and written once (the absent rows' clip needs the row norm before the update)."""
    r = cuda.grid(1)
    K = table.shape[1]
    if r < table.shape[0]:
        w = cuda.local.array(MAX_ROW_WIDTH, float64)
        weight_sq = 0.0
        for c in range(K):
            w[c] = float64(table[r, c])
            weight_sq += w[c] * w[c]
        u = position[r]
        s = 0.0
        if u < 0:
            s = 2.0 * l2
            if clip_absent:
                s *= _absent_row_scale_device(math.sqrt(weight_sq), l2, absent_ratio, absent_floor)
        for c in range(K):
            g = float64(row_grads[u, c]) if u >= 0 else s * w[c]
            table[r, c], m[r, c], v[r, c] = _adam_element_device(
                w[c], float64(m[r, c]), float64(v[r, c]), g, lr_t, beta1, beta2, eps)


class TableAdamCuda:
    """`adam_table` on the GPU: `_adam_table_rows_kernel` with a [V] position map kept across
    calls (all -1 between calls; a call sets and resets the batch's U entries), instead of a map
    written in full each step (at V = 33.8M: 135 MB twice per table). Rows wider than
    MAX_ROW_WIDTH go through `_adam_table_kernel`."""

    def __init__(self):
        self._position = None

    def __call__(self, table, m, v, ids, row_grads, l2, clip_absent, absent_ratio, absent_floor,
                 lr_t, beta1, beta2, eps):
        xp = array_module_of(table)
        V = table.shape[0]
        if self._position is None or self._position.shape[0] < V:
            self._position = xp.full(V, -1, dtype=xp.int32)
        position = self._position[:V]
        position[ids] = xp.arange(ids.shape[0], dtype=xp.int32)
        kernel = _adam_table_rows_kernel if table.shape[1] <= MAX_ROW_WIDTH else _adam_table_kernel
        launch(kernel, V, table, m, v, position, row_grads, l2, bool(clip_absent), absent_ratio, absent_floor,
               lr_t, beta1, beta2, eps)
        position[ids] = -1


def adam_rows_cuda(table, m, v, ids, row_grads, lr_t, beta1, beta2, eps):
    launch(_adam_rows_kernel, ids.shape[0] * table.shape[1],
           table, m, v, ids, row_grads, lr_t, beta1, beta2, eps)


def adam_table_cuda(table, m, v, ids, row_grads, l2, clip_absent, absent_ratio, absent_floor,
                    lr_t, beta1, beta2, eps):
    position = row_positions(array_module_of(table), table.shape[0], ids)
    launch(_adam_table_kernel, table.shape[0], table, m, v, position, row_grads, l2,
           bool(clip_absent), absent_ratio, absent_floor, lr_t, beta1, beta2, eps)
