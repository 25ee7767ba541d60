"""Deep part: Dense + ReLU stacks with optional (inverted) dropout, as DeepCTR's DNN layer.
Symbols: B batch, I input width, H hidden width.

    dense:  y = x W + b            dx = dy W^T,  dW = x^T dy,  db = sum_b dy
    relu:   y = max(x, 0)          dx = dy * [x > 0]
    dropout (training only): y = x * mask / (1 - rate),  mask ~ Bernoulli(1 - rate)
"""
import numpy as np

from engine.kernels.common import array_module_of
from engine.kernels.dense import bias_relu_cpu, outer_cpu, relu_backward_bias_grad_cpu


def dense_forward(x, W, b):
    """x (B, I), W (I, H), b (H,) or None -> y (B, H)."""
    y = x @ W
    if b is not None:
        y += b
    return y, (x, W)


def dense_backward(dy, cache, db=None):
    """dy (B, H) -> (dx (B, I), dW (I, H), db (H,)); db is summed here unless given."""
    x, W = cache
    if W.shape[1] == 1 and isinstance(dy, np.ndarray):     # the output head: an outer product
        dtype = np.result_type(dy, W)
        dx = outer_cpu(dy[:, 0].astype(dtype, copy=False), W[:, 0].astype(dtype, copy=False),
                       np.empty(x.shape, dtype))
    else:
        dx = dy @ W.T
    # dW = x^T dy, computed as (dy^T x)^T: the same numbers; with an older OpenBLAS the (H, I)
    # product ran 2-7x faster than the (I, H) one at B = 1e5 (0.3.31 runs both alike)
    dW = (dy.T @ x).T                                 # (I, H), a transposed view
    return dx, dW, dy.sum(axis=0) if db is None else db


def relu_forward(x):
    """In place: x is a fresh product that nothing else holds. The cache is the output y itself,
    since [x > 0] == [y > 0]: y is kept anyway as the next layer's input, so no (B, H) mask is."""
    array_module_of(x).maximum(x, 0, out=x)
    return x, x


def relu_backward(dy, y, out=None):
    """dy * [y > 0]; out=dy zeroes dy in place (mlp_backward owns its dy, a fresh product)."""
    return array_module_of(dy).multiply(dy, y > 0, out=out)


def dense_relu_forward(x, W, b):
    """relu(x W + b): on host arrays the bias and the ReLU are one fused pass (engine/kernels/dense.py)."""
    if isinstance(x, np.ndarray):
        y, dense_cache = dense_forward(x, W, None)
        bias_relu_cpu(y, b.astype(y.dtype, copy=False))
        return y, dense_cache, y
    y, dense_cache = dense_forward(x, W, b)
    y, relu_cache = relu_forward(y)
    return y, dense_cache, relu_cache


def relu_dense_backward(dy, dense_cache, relu_cache, owned: bool):
    """The backward of dense_relu_forward: -> (dx, dW, db). `owned`: dy may be overwritten."""
    if isinstance(dy, np.ndarray):
        out = dy if owned else np.empty_like(dy)
        db = relu_backward_bias_grad_cpu(dy, relu_cache, out)
        return dense_backward(out, dense_cache, db)
    return dense_backward(relu_backward(dy, relu_cache, out=dy if owned else None), dense_cache)


def mlp_forward(x, weights, biases, dropout_rate: float = 0.0, rng=None):
    """x (B, I) -> h (B, H_last) through len(weights) Dense+ReLU(+dropout) layers."""
    caches = []
    h = x
    for W, b in zip(weights, biases):
        h, dense_cache, relu_cache = dense_relu_forward(h, W, b)
        mask = None
        if dropout_rate > 0.0 and rng is not None:
            keep = 1.0 - dropout_rate
            mask = (rng.random(h.shape) < keep).astype(h.dtype) / keep
            h = h * mask
        caches.append((dense_cache, relu_cache, mask))
    return h, caches


def mlp_backward(dh, caches):
    """dh (B, H_last) -> (dx (B, I), [dW...], [db...]), layers in reverse order."""
    dweights, dbiases = [], []
    owned = False                                   # dh is the caller's until we make a new one
    for dense_cache, relu_cache, mask in reversed(caches):
        if mask is not None:
            dh, owned = dh * mask, True
        dh, dW, db = relu_dense_backward(dh, dense_cache, relu_cache, owned)
        owned = True                                # dx is a fresh product
        dweights.append(dW)
        dbiases.append(db)
    return dh, dweights[::-1], dbiases[::-1]
