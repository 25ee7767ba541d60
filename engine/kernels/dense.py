"""The elementwise ends of a Dense + ReLU layer, fused into one pass each, and the input gradient
of a one-unit Dense (the output head), for host arrays (`@njit`, threads over rows).
engine/layers/mlp.py keeps the plain NumPy forms (two passes each, a (B, H) bool temporary
backward, dy @ W^T) as their test oracle (tests/test_fast_paths.py).
Symbols: B batch, H layer width."""
import numba
import numpy as np

ROW_BLOCK = 2048        # rows per task: enough work per thread, a small partial-sum array


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
