"""Factorization-machine second-order term. Symbols: B batch, F sparse fields, K embedding dim.

    fm[b] = sum_{f < g} <e[b, f], e[b, g]>
          = 0.5 * sum_k ( (sum_f e[b, f, k])^2 - sum_f e[b, f, k]^2 )
                         square_of_sum          sum_of_squares

    d fm[b] / d e[b, f, k] = sum_g e[b, g, k] - e[b, f, k]

Host arrays go through the fused kernels of engine/kernels/fm.py; the plain forms below are the
math, run on the GPU (CuPy), and are the kernels' test oracle.
"""
import numpy as np

from engine.kernels.fm import fm_backward_cpu, fm_forward_cpu


def fm_forward_plain(emb):
    """emb (B, F, K) -> out (B,)."""
    field_sum = emb.sum(axis=1)                       # (B, K)
    square_of_sum = field_sum * field_sum             # (B, K)
    sum_of_squares = (emb * emb).sum(axis=1)          # (B, K)
    out = 0.5 * (square_of_sum - sum_of_squares).sum(axis=1)  # (B,)
    return out, (emb, field_sum)


def fm_backward_plain(dout, cache, add=None):
    """dout (B,) -> demb (B, F, K), plus `add` (B, F, K) when given."""
    emb, field_sum = cache
    demb = field_sum[:, None, :] - emb                # (B, F, K)
    demb *= dout[:, None, None]                       # in place: one (B, F, K) temporary, not two
    if add is not None:
        demb += add
    return demb


def fm_forward(emb):
    if isinstance(emb, np.ndarray):
        out, field_sum = fm_forward_cpu(emb)
        return out, (emb, field_sum)
    return fm_forward_plain(emb)


def fm_backward(dout, cache, add=None):
    if isinstance(dout, np.ndarray):
        emb, field_sum = cache
        return fm_backward_cpu(dout.astype(emb.dtype, copy=False), emb, field_sum, add)
    return fm_backward_plain(dout, cache, add)
