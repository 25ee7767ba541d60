"""The linear (wide) part. Symbols: B batch, F sparse fields, D dense features.

    logit[b] = sum_f wide[b, f] + dense[b] . w

`wide` (B, F, 1) are the rows of the 1-dimensional linear table looked up by the batch's ids
(see embedding.py); `w` (D,) weighs the dense features. No bias: the model's one global bias is
added at the output, as in DeepCTR.
"""
from dataio.arrays import array_module_of


def linear_forward(wide, dense, w):
    """wide (B, F, 1), dense (B, D), w (D,) -> logit (B,)."""
    logit = wide.sum(axis=(1, 2))  # (B,)
    if w.shape[0]:
        logit = logit + dense @ w
    return logit, (wide.shape, dense, w)


def linear_backward(dlogit, cache):
    """dlogit (B,) -> (dwide (B, F, 1), ddense (B, D), dw (D,))."""
    wide_shape, dense, w = cache
    xp = array_module_of(dlogit)
    dwide = xp.broadcast_to(dlogit[:, None, None], wide_shape)  # (B, F, 1)
    ddense = dlogit[:, None] * w[None, :]                        # (B, D)
    dw = dense.T @ dlogit                                        # (D,)
    return dwide, ddense, dw
