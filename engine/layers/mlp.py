"""Deep part: Dense + ReLU stacks with optional (inverted) dropout, as DeepCTR's DNN layer.
Symbols: B batch, I input width, H hidden width.

    dense:  y = x W + b            dx = dy W^T,  dW = x^T dy,  db = sum_b dy
    relu:   y = max(x, 0)          dx = dy * [x > 0]
    dropout (training only): y = x * mask / (1 - rate),  mask ~ Bernoulli(1 - rate)

`kernels` (optional everywhere): a backend (engine/backend.py) whose entries bias_relu,
relu_mask_bias_grad and dense_input_grad run the elementwise ends and dx (fused kernels on `cpu`
and `cuda`); without one, the plain forms of engine/kernels/dense.py run.
"""
from engine.kernels import dense as plain
from dataio.arrays import array_module_of


def dense_forward(x, W, b):
    """x (B, I), W (I, H), b (H,) or None -> y (B, H)."""
    y = x @ W
    if b is not None:
        y += b
    return y, (x, W)


def dense_backward(dy, cache, db=None, kernels=None):
    """dy (B, H) -> (dx (B, I), dW (I, H), db (H,)); db is summed here unless given."""
    x, W = cache
    dx = (kernels.dense_input_grad if kernels is not None else plain.dense_input_grad_reference)(dy, W)
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


def dense_relu_forward(x, W, b, kernels=None):
    """relu(x W + b) -> (y, dense_cache, relu_cache): the bias and the ReLU in one call, in place
    on the fresh product; the ReLU's cache is y itself (see relu_forward)."""
    y, dense_cache = dense_forward(x, W, None)
    (kernels.bias_relu if kernels is not None else plain.bias_relu_reference)(y, b)
    return y, dense_cache, y


def relu_dense_backward(dy, dense_cache, relu_cache, owned: bool, kernels=None):
    """The backward of dense_relu_forward: -> (dx, dW, db). `owned`: dy may be overwritten."""
    out = dy if owned else array_module_of(dy).empty_like(dy)
    mask_bias_grad = kernels.relu_mask_bias_grad if kernels is not None else plain.relu_mask_bias_grad_reference
    db = mask_bias_grad(dy, relu_cache, out)
    return dense_backward(out, dense_cache, db, kernels)


def mlp_forward(x, weights, biases, dropout_rate: float = 0.0, rng=None, kernels=None):
    """x (B, I) -> h (B, H_last) through len(weights) Dense+ReLU(+dropout) layers."""
    caches = []
    h = x
    for W, b in zip(weights, biases):
        h, dense_cache, relu_cache = dense_relu_forward(h, W, b, kernels)
        mask = None
        if dropout_rate > 0.0 and rng is not None:
            keep = 1.0 - dropout_rate
            mask = (rng.random(h.shape) < keep).astype(h.dtype) / keep     # drawn on the host (the run's RNG)
            mask = array_module_of(h).asarray(mask)                            # and moved to h's device
            h = h * mask
        caches.append((dense_cache, relu_cache, mask))
    return h, caches


def mlp_backward(dh, caches, kernels=None):
    """dh (B, H_last) -> (dx (B, I), [dW...], [db...]), layers in reverse order."""
    dweights, dbiases = [], []
    owned = False                                   # dh is the caller's until we make a new one
    for dense_cache, relu_cache, mask in reversed(caches):
        if mask is not None:
            dh, owned = dh * mask, True
        dh, dW, db = relu_dense_backward(dh, dense_cache, relu_cache, owned, kernels)
        owned = True                                # dx is a fresh product
        dweights.append(dW)
        dbiases.append(db)
    return dh, dweights[::-1], dbiases[::-1]
