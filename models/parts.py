"""Pieces several models share: the DNN tower and the output Dense(1, no bias), as DeepCTR builds
them (glorot_normal kernels, zero biases). Symbols: B batch, d input width, H hidden width."""
import numpy as np

from engine.layers.mlp import dense_backward, dense_forward, mlp_backward, mlp_forward
from models.init import glorot_normal


def init_dnn(rng, input_width: int, hidden: tuple) -> dict:
    params, width = {}, input_width
    for i, units in enumerate(hidden):
        params[f"dnn.{i}.W"] = glorot_normal(rng, (width, units))
        params[f"dnn.{i}.b"] = np.zeros(units)
        width = units
    return params


def init_head(rng, input_width: int) -> dict:
    return {"head.W": glorot_normal(rng, (input_width, 1))}


def dnn_forward(params, x, num_layers: int, dropout: float, training: bool, rng, kernels):
    """x (B, d) -> h (B, H)."""
    weights = [params[f"dnn.{i}.W"] for i in range(num_layers)]
    biases = [params[f"dnn.{i}.b"] for i in range(num_layers)]
    return mlp_forward(x, weights, biases, dropout if training else 0.0, rng, kernels)


def dnn_backward(dh, cache, grads: dict, kernels):
    """dh (B, H) -> dx (B, d); writes dnn.i.W / dnn.i.b into grads."""
    dx, dweights, dbiases = mlp_backward(dh, cache, kernels)
    for i, (dW, db) in enumerate(zip(dweights, dbiases)):
        grads[f"dnn.{i}.W"], grads[f"dnn.{i}.b"] = dW, db
    return dx


def head_forward(params, h):
    """h (B, H) -> logit (B,)."""
    out, cache = dense_forward(h, params["head.W"], None)
    return out[:, 0], cache


def head_backward(dlogit, cache, grads: dict, kernels):
    dh, grads["head.W"], _ = dense_backward(dlogit[:, None], cache, None, kernels)
    return dh
