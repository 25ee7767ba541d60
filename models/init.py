"""Initialisers of the reference (Keras/DeepCTR), drawn on the host from one NumPy generator."""
import numpy as np


def _fans(shape):
    # Keras: the last two axes are (fan_in, fan_out); leading axes multiply both
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


def truncated_normal(rng, shape, stddev):
    """Normal(0, stddev) redrawn beyond two standard deviations."""
    out = rng.normal(0.0, stddev, size=shape)
    outside = np.abs(out) > 2 * stddev
    while outside.any():
        out[outside] = rng.normal(0.0, stddev, size=int(outside.sum()))
        outside = np.abs(out) > 2 * stddev
    return out


def glorot_normal(rng, shape):
    """Keras glorot_normal: truncated normal, stddev sqrt(2 / (fan_in + fan_out)) / 0.8796."""
    fan_in, fan_out = _fans(shape)
    return truncated_normal(rng, shape, np.sqrt(2.0 / (fan_in + fan_out)) / 0.87962566103423978)


def glorot_uniform(rng, shape):
    fan_in, fan_out = _fans(shape)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)
