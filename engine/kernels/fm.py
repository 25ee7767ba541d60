"""The FM term in one pass over the batch each way: Numba CPU (`@njit`, threads over rows) and
Numba CUDA (forward: a thread per row; backward: a thread per element) versions.
The plain form they replace is in engine/layers/fm.py and is their test oracle
(tests/test_fast_paths.py, tests/cudasim); the plain form makes four (B, F, K) or (B, K)
temporaries forward and two backward (on a GPU: as many launches), these make none.
Symbols as there: B batch, F fields, K embedding dim.

Sums run in float64 whatever the input dtype, then are stored in it. The `fm_*_fused_*` functions
are the backend table's entries: the layer's signatures, cache (emb, field_sum).
"""
import numba
import numpy as np

from engine.kernels.common import array_module_of, contiguous_if_host, cuda, float64, launch


@numba.njit(parallel=True, cache=True)
def fm_forward_cpu(emb):
    """emb (B, F, K) -> (out (B,), field_sum (B, K)), in emb's dtype."""
    B, F, K = emb.shape
    out = np.empty(B, dtype=emb.dtype)
    field_sum = np.empty((B, K), dtype=emb.dtype)
    for b in numba.prange(B):
        total = 0.0
        for k in range(K):
            s, squares = 0.0, 0.0
            for f in range(F):
                v = emb[b, f, k]
                s += v
                squares += v * v
            field_sum[b, k] = s
            total += s * s - squares
        out[b] = 0.5 * total
    return out, field_sum


@numba.njit(parallel=True, cache=True)
def fm_backward_cpu(dout, emb, field_sum, add):
    """demb[b, f, k] = dout[b] * (field_sum[b, k] - emb[b, f, k]) (+ add[b, f, k] when add is
    given: DeepFM's DNN gradient, so the two are summed in the same pass)."""
    B, F, K = emb.shape
    demb = np.empty_like(emb)
    for b in numba.prange(B):
        g = dout[b]
        for f in range(F):
            for k in range(K):
                d = g * (field_sum[b, k] - emb[b, f, k])
                if add is not None:
                    d += add[b, f, k]
                demb[b, f, k] = d
    return demb


def fm_forward_fused_cpu(emb):
    """emb (B, F, K) -> (out (B,), cache), as engine.layers.fm.fm_forward_plain."""
    out, field_sum = fm_forward_cpu(emb)
    return out, (emb, field_sum)


def fm_backward_fused_cpu(dout, cache, add=None):
    """dout (B,) -> demb (B, F, K), as engine.layers.fm.fm_backward_plain."""
    emb, field_sum = cache
    return fm_backward_cpu(dout.astype(emb.dtype, copy=False), emb, field_sum, add)


# --------------------------------------------------------------------------------------------
# Numba CUDA. float64() makes every load a float64, on the GPU and in the simulator alike.


@cuda.jit
def _fm_forward_kernel(emb, out, field_sum):
    b = cuda.grid(1)
    if b < emb.shape[0]:
        total = 0.0
        for k in range(emb.shape[2]):
            s, squares = 0.0, 0.0
            for f in range(emb.shape[1]):
                v = float64(emb[b, f, k])
                s += v
                squares += v * v
            field_sum[b, k] = s
            total += s * s - squares
        out[b] = 0.5 * total


@cuda.jit
def _fm_backward_kernel(dout, emb, field_sum, add, has_add, demb):
    t = cuda.grid(1)
    B, F, K = emb.shape
    if t < B * F * K:
        b = t // (F * K)
        k = t % K
        f = (t // K) % F
        d = float64(dout[b]) * (float64(field_sum[b, k]) - float64(emb[b, f, k]))
        if has_add:
            d += float64(add[b, f, k])
        demb[b, f, k] = d


def fm_forward_fused_cuda(emb):
    """emb (B, F, K) -> (out (B,), cache), as engine.layers.fm.fm_forward_plain; one launch."""
    xp = array_module_of(emb)
    out = xp.empty(emb.shape[0], dtype=emb.dtype)
    field_sum = xp.empty((emb.shape[0], emb.shape[2]), dtype=emb.dtype)
    launch(_fm_forward_kernel, emb.shape[0], emb, out, field_sum)
    return out, (emb, field_sum)


def fm_backward_fused_cuda(dout, cache, add=None):
    """dout (B,) -> demb (B, F, K) (+ add, which may be a strided view); one launch."""
    emb, field_sum = cache
    demb = array_module_of(emb).empty_like(emb)
    launch(_fm_backward_kernel, emb.size, dout, emb, field_sum, emb if add is None else contiguous_if_host(add),
           add is not None, demb)
    return demb
