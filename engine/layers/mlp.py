"""Deep part: Dense + ReLU stacks with optional (inverted) dropout, as DeepCTR's DNN layer.
Symbols: B batch, I input width, H hidden width.

    dense:  y = x W + b            dx = dy W^T,  dW = x^T dy,  db = sum_b dy
    relu:   y = max(x, 0)          dx = dy * [x > 0]
    dropout (training only): y = x * mask / (1 - rate),  mask ~ Bernoulli(1 - rate)
"""
from engine.kernels.common import array_module_of


def dense_forward(x, W, b):
    """x (B, I), W (I, H), b (H,) or None -> y (B, H)."""
    y = x @ W
    if b is not None:
        y += b
    return y, (x, W)


def dense_backward(dy, cache):
    """dy (B, H) -> (dx (B, I), dW (I, H), db (H,))."""
    x, W = cache
    return dy @ W.T, x.T @ dy, dy.sum(axis=0)


def relu_forward(x):
    """In place: x is a fresh product that nothing else holds."""
    positive = x > 0
    array_module_of(x).maximum(x, 0, out=x)
    return x, positive


def relu_backward(dy, positive):
    return dy * positive


def mlp_forward(x, weights, biases, dropout_rate: float = 0.0, rng=None):
    """x (B, I) -> h (B, H_last) through len(weights) Dense+ReLU(+dropout) layers."""
    caches = []
    h = x
    for W, b in zip(weights, biases):
        h, dense_cache = dense_forward(h, W, b)
        h, positive = relu_forward(h)
        mask = None
        if dropout_rate > 0.0 and rng is not None:
            keep = 1.0 - dropout_rate
            mask = (rng.random(h.shape) < keep).astype(h.dtype) / keep
            h = h * mask
        caches.append((dense_cache, positive, mask))
    return h, caches


def mlp_backward(dh, caches):
    """dh (B, H_last) -> (dx (B, I), [dW...], [db...]), layers in reverse order."""
    dweights, dbiases = [], []
    for dense_cache, positive, mask in reversed(caches):
        if mask is not None:
            dh = dh * mask
        dh = relu_backward(dh, positive)
        dh, dW, db = dense_backward(dh, dense_cache)
        dweights.append(dW)
        dbiases.append(db)
    return dh, dweights[::-1], dbiases[::-1]
