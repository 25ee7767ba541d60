"""The elementwise ends of a Dense + ReLU layer, fused into one pass each, and the input gradient
of a Dense layer, which for a one-unit Dense (the output head) is an outer product.
Symbols: B batch, I input width, H layer width.

    bias_relu(y, b)                 y <- max(y + b, 0), in place                   -> y
    relu_mask_bias_grad(dy, y, out) out <- dy * [y > 0] (out may be dy); db = sum_b out  -> db (H,)
    dense_input_grad(dy, W)         dx = dy W^T                                    -> dx (B, I)

Layout: NumPy forms `*_numpy` (any array module: also the plain CuPy form), Numba CPU versions
(`@njit`, threads over rows), Numba CUDA versions with their launchers; `<entry>_<backend>` is what
the backend table holds. The NumPy forms are the kernels' test oracle (tests/test_fast_paths.py,
tests/cudasim).
The bias gradient is a column sum in a fixed order on both targets (row blocks, then the blocks
in order, in float64): the same bits on every run."""
import numba
import numpy as np

from engine.kernels.common import array_module_of, contiguous_if_host, cuda, float64, launch

ROW_BLOCK = 2048        # rows per task: enough work per thread, a small partial-sum array


# --------------------------------------------------------------------------------------------
# NumPy forms (two passes each; any array module)


def bias_relu_numpy(y, b):
    y += b
    return array_module_of(y).maximum(y, 0, out=y)


def relu_mask_bias_grad_numpy(dy, y, out):
    array_module_of(dy).multiply(dy, y > 0, out=out)
    return out.sum(axis=0)


def dense_input_grad_numpy(dy, W):
    return dy @ W.T


# --------------------------------------------------------------------------------------------
# Numba CPU


@numba.njit(parallel=True, cache=True)
def _bias_relu_cpu(y, b):
    """In place: y (B, H) <- max(y + b, 0)."""
    B, H = y.shape
    for r in numba.prange(B):
        for j in range(H):
            v = y[r, j] + b[j]
            y[r, j] = v if v > 0 else 0
    return y


@numba.njit(parallel=True, cache=True)
def relu_mask_bias_grad_cpu(dy, y, out):
    """out (B, H) <- dy * [y > 0] (out may be dy itself); returns db = sum over rows of out, (H,).
    Each row block sums into its own row of `partial` in float64, then the blocks are added."""
    B, H = dy.shape
    blocks = (B + ROW_BLOCK - 1) // ROW_BLOCK
    partial = np.zeros((blocks, H))
    for blk in numba.prange(blocks):
        for r in range(blk * ROW_BLOCK, min(B, (blk + 1) * ROW_BLOCK)):
            for j in range(H):
                g = dy[r, j] if y[r, j] > 0 else 0
                out[r, j] = g
                partial[blk, j] += g
    db = np.zeros(H, dtype=dy.dtype)
    for j in range(H):
        s = 0.0
        for blk in range(blocks):
            s += partial[blk, j]
        db[j] = s
    return db


@numba.njit(parallel=True, cache=True)
def outer_cpu(u, w, out):
    """out (B, I) <- u (B,) outer w (I,): dx = dy W^T of a Dense with one output unit. OpenBLAS runs
    this as a GEMM with inner dimension 1 at a few GB/s (58 ms at B = 131072, I = 400, against 5)."""
    B, I = out.shape
    for r in numba.prange(B):
        for j in range(I):
            out[r, j] = u[r] * w[j]
    return out


def bias_relu_cpu(y, b):
    return _bias_relu_cpu(y, b.astype(y.dtype, copy=False))


def dense_input_grad_cpu(dy, W):
    """dy @ W.T, except for one output unit, where OpenBLAS is slow: then `outer_cpu`."""
    if W.shape[1] != 1:
        return dy @ W.T
    dtype = np.result_type(dy, W)
    return outer_cpu(dy[:, 0].astype(dtype, copy=False), W[:, 0].astype(dtype, copy=False),
                     np.empty((dy.shape[0], W.shape[0]), dtype))


# --------------------------------------------------------------------------------------------
# Numba CUDA: bias + ReLU a thread per element; the backward a thread per (row block, column),
# whose partial column sums a second launch adds up in order.

ROW_BLOCK_CUDA = 256


@cuda.jit
def _bias_relu_kernel(y, b):
    t = cuda.grid(1)
    H = y.shape[1]
    if t < y.shape[0] * H:
        r = t // H
        j = t - r * H
        v = y[r, j] + b[j]
        y[r, j] = v if v > 0 else 0


@cuda.jit
def _relu_mask_partial_kernel(dy, y, out, partial):
    t = cuda.grid(1)
    B, H = dy.shape
    if t < partial.shape[0] * H:
        blk = t // H
        j = t - blk * H
        s = 0.0
        for r in range(blk * ROW_BLOCK_CUDA, min(B, (blk + 1) * ROW_BLOCK_CUDA)):
            g = dy[r, j] if y[r, j] > 0 else 0
            out[r, j] = g
            s += float64(g)
        partial[blk, j] = s


@cuda.jit
def _column_sums_kernel(partial, db):
    j = cuda.grid(1)
    if j < db.shape[0]:
        s = 0.0
        for blk in range(partial.shape[0]):
            s += partial[blk, j]
        db[j] = s


def bias_relu_cuda(y, b):
    """In place, one launch: y (B, H) <- max(y + b, 0)."""
    launch(_bias_relu_kernel, y.size, y, b.astype(y.dtype, copy=False))
    return y


def relu_mask_bias_grad_cuda(dy, y, out):
    """out <- dy * [y > 0] (out may be dy); -> db (H,), two launches, deterministic."""
    xp = array_module_of(dy)
    B, H = dy.shape
    partial = xp.empty(((B + ROW_BLOCK_CUDA - 1) // ROW_BLOCK_CUDA, H), dtype=xp.float64)
    launch(_relu_mask_partial_kernel, partial.size, contiguous_if_host(dy), y, out, partial)
    db = xp.empty(H, dtype=dy.dtype)
    launch(_column_sums_kernel, H, partial, db)
    return db
