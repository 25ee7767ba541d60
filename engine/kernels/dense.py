"""The elementwise ends of a Dense + ReLU layer, fused into one pass each, and the input gradient
of a Dense layer, which for a one-unit Dense (the output head) is an outer product.
Symbols: B batch, I input width, H layer width.

    bias_relu(y, b)                 y <- max(y + b, 0), in place                   -> y
    relu_mask_bias_grad(dy, y, out) out <- dy * [y > 0] (out may be dy); db = sum_b out  -> db (H,)
    dense_input_grad(dy, W)         dx = dy W^T                                    -> dx (B, I)

Layout: NumPy reference (any array module: also the plain CuPy form), Numba CPU versions (`@njit`,
threads over rows), with the wrappers that the backend table holds. The references are the CPU
kernels' test oracle (tests/test_fast_paths.py)."""
import numba
import numpy as np

from engine.kernels.common import array_module_of

ROW_BLOCK = 2048        # rows per task: enough work per thread, a small partial-sum array


# --------------------------------------------------------------------------------------------
# NumPy reference (two passes each; any array module)


def bias_relu_reference(y, b):
    y += b
    return array_module_of(y).maximum(y, 0, out=y)


def relu_mask_bias_grad_reference(dy, y, out):
    array_module_of(dy).multiply(dy, y > 0, out=out)
    return out.sum(axis=0)


def dense_input_grad_reference(dy, W):
    return dy @ W.T


# --------------------------------------------------------------------------------------------
# Numba CPU


@numba.njit(parallel=True, cache=True)
def bias_relu_cpu(y, b):
    """In place: y (B, H) <- max(y + b, 0)."""
    B, H = y.shape
    for r in numba.prange(B):
        for j in range(H):
            v = y[r, j] + b[j]
            y[r, j] = v if v > 0 else 0
    return y


@numba.njit(parallel=True, cache=True)
def relu_backward_bias_grad_cpu(dy, y, out):
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


def bias_relu_fused_cpu(y, b):
    return bias_relu_cpu(y, b.astype(y.dtype, copy=False))


def dense_input_grad_cpu(dy, W):
    """dy @ W.T, except for one output unit, where OpenBLAS is slow: then `outer_cpu`."""
    if W.shape[1] != 1:
        return dy @ W.T
    dtype = np.result_type(dy, W)
    return outer_cpu(dy[:, 0].astype(dtype, copy=False), W[:, 0].astype(dtype, copy=False),
                     np.empty((dy.shape[0], W.shape[0]), dtype))
