"""The FM term in one pass over the batch each way: Numba CPU (`@njit`, threads over rows) and
Numba CUDA (forward: a thread per row; backward: a thread per element) versions of the backend
entries fm_forward and fm_backward (the layer's signatures, cache (emb, field_sum)).
Their NumPy forms are in engine/layers/fm.py and are their test oracle (tests/test_fast_paths.py,
tests/cudasim); those make four (B, F, K) or (B, K) temporaries forward and two backward (on a
GPU: as many launches), these make none. Symbols as there: B batch, F fields, K embedding dim.

Sums over fields run in float64 whatever the input dtype, then are stored in it.
"""
import numba
import numpy as np

from engine.kernels.common import array_module_of, contiguous_if_host, cuda, float64, for_cuda, launch

# The two loops below are the only FM arithmetic of the kernels; the CPU and CUDA versions call
# them. `zero` is -0.0 in the arithmetic's dtype, and x + zero is x exactly (also for x = -0.0),
# in that dtype: the CPU passes the input's dtype (float32 input: float32 products and differences),
# the CUDA launchers float64 (each result rounded once, as tests/cudasim checks).


@numba.njit(cache=True)
def fm_row(emb, b, zero, out, field_sum):
    """out[b] and field_sum[b, :] of row b; the sums over fields in float64."""
    total = 0.0
    for k in range(emb.shape[2]):
        s, squares = 0.0, 0.0
        for f in range(emb.shape[1]):
            v = emb[b, f, k] + zero
            s += float64(v)
            squares += float64(v * v)
        field_sum[b, k] = s
        total += s * s - squares
    out[b] = 0.5 * total


@numba.njit(cache=True)
def fm_element_grad(dout, emb, field_sum, add, has_add, zero, demb, b, f, k):
    """demb[b, f, k] = dout[b] * (field_sum[b, k] - emb[b, f, k]) (+ add[b, f, k] when has_add)."""
    d = (dout[b] + zero) * ((field_sum[b, k] + zero) - (emb[b, f, k] + zero))
    if has_add:
        d += add[b, f, k] + zero
    demb[b, f, k] = d


# --------------------------------------------------------------------------------------------
# Numba CPU: threads over the rows of the batch


@numba.njit(parallel=True, cache=True)
def _fm_forward_cpu(emb, zero, out, field_sum):
    for b in numba.prange(emb.shape[0]):
        fm_row(emb, b, zero, out, field_sum)


@numba.njit(parallel=True, cache=True)
def _fm_backward_cpu(dout, emb, field_sum, add, has_add, zero, demb):
    B, F, K = emb.shape
    for b in numba.prange(B):
        for f in range(F):
            for k in range(K):
                fm_element_grad(dout, emb, field_sum, add, has_add, zero, demb, b, f, k)


def fm_forward_cpu(emb):
    """emb (B, F, K) -> (out (B,), cache), as engine.layers.fm.fm_forward_numpy."""
    out = np.empty(emb.shape[0], dtype=emb.dtype)
    field_sum = np.empty((emb.shape[0], emb.shape[2]), dtype=emb.dtype)
    _fm_forward_cpu(emb, emb.dtype.type(-0.0), out, field_sum)
    return out, (emb, field_sum)


def fm_backward_cpu(dout, cache, add=None):
    """dout (B,) -> demb (B, F, K), as engine.layers.fm.fm_backward_numpy (+ add, DeepFM's DNN
    gradient, summed in the same pass)."""
    emb, field_sum = cache
    demb = np.empty_like(emb)
    _fm_backward_cpu(dout.astype(emb.dtype, copy=False), emb, field_sum, emb if add is None else add,
                     add is not None, emb.dtype.type(-0.0), demb)
    return demb


# --------------------------------------------------------------------------------------------
# Numba CUDA: forward a thread per row, backward a thread per element; float64 arithmetic.

_fm_row_device = for_cuda(fm_row)
_fm_element_grad_device = for_cuda(fm_element_grad)


@cuda.jit
def _fm_forward_kernel(emb, out, field_sum):
    b = cuda.grid(1)
    if b < emb.shape[0]:
        _fm_row_device(emb, b, float64(-0.0), out, field_sum)


@cuda.jit
def _fm_backward_kernel(dout, emb, field_sum, add, has_add, demb):
    t = cuda.grid(1)
    B, F, K = emb.shape
    if t < B * F * K:
        b = t // (F * K)
        k = t % K
        f = (t // K) % F
        _fm_element_grad_device(dout, emb, field_sum, add, has_add, float64(-0.0), demb, b, f, k)


def fm_forward_cuda(emb):
    """emb (B, F, K) -> (out (B,), cache), as engine.layers.fm.fm_forward_numpy; one launch."""
    xp = array_module_of(emb)
    out = xp.empty(emb.shape[0], dtype=emb.dtype)
    field_sum = xp.empty((emb.shape[0], emb.shape[2]), dtype=emb.dtype)
    launch(_fm_forward_kernel, emb.shape[0], emb, out, field_sum)
    return out, (emb, field_sum)


def fm_backward_cuda(dout, cache, add=None):
    """dout (B,) -> demb (B, F, K) (+ add, which may be a strided view); one launch."""
    emb, field_sum = cache
    demb = array_module_of(emb).empty_like(emb)
    launch(_fm_backward_kernel, emb.size, dout, emb, field_sum, emb if add is None else contiguous_if_host(add),
           add is not None, demb)
    return demb
