"""Factorization-machine second-order term. Symbols: B batch, F sparse fields, K embedding dim.

    fm[b] = sum_{f < g} <e[b, f], e[b, g]>
          = 0.5 * sum_k ( (sum_f e[b, f, k])^2 - sum_f e[b, f, k]^2 )
                         square_of_sum          sum_of_squares

    d fm[b] / d e[b, f, k] = sum_g e[b, g, k] - e[b, f, k]

The plain forms below are the math and the fused kernels' test oracle. `fm_forward` and
`fm_backward` run the backend's entries of the same name (`kernels`: these plain forms on
`numpy`, fused kernels on `cpu` and `cuda`; engine/backend.py).
"""


def fm_forward_numpy(emb):
    """emb (B, F, K) -> out (B,)."""
    field_sum = emb.sum(axis=1)                       # (B, K)
    square_of_sum = field_sum * field_sum             # (B, K)
    sum_of_squares = (emb * emb).sum(axis=1)          # (B, K)
    out = 0.5 * (square_of_sum - sum_of_squares).sum(axis=1)  # (B,)
    return out, (emb, field_sum)


def fm_backward_numpy(dout, cache, add=None):
    """dout (B,) -> demb (B, F, K), plus `add` (B, F, K) when given."""
    emb, field_sum = cache
    demb = field_sum[:, None, :] - emb                # (B, F, K)
    demb *= dout[:, None, None]                       # in place: one (B, F, K) temporary, not two
    if add is not None:
        demb += add
    return demb


def fm_forward(emb, kernels):
    """emb (B, F, K) -> (out (B,), cache)."""
    return kernels.fm_forward(emb)


def fm_backward(dout, cache, add, kernels):
    """dout (B,) -> demb (B, F, K), plus `add` unless it is None."""
    return kernels.fm_backward(dout, cache, add)
