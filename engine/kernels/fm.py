"""The FM term in one pass over the batch each way, for host arrays (`@njit`, threads over rows).
The plain NumPy form it replaces is in engine/layers/fm.py and is its test oracle
(tests/test_fast_paths.py); the plain form makes four (B, F, K) or (B, K) temporaries forward and
two backward, this makes none. Symbols as there: B batch, F fields, K embedding dim.

Sums run in float64 whatever the input dtype, then are stored in it. `fm_forward_fused_cpu` and
`fm_backward_fused_cpu` are the backend table's entries: the layer's signatures, cache (emb, field_sum).
"""
import numba
import numpy as np


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
