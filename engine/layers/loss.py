"""Binary cross-entropy of the logits, averaged over the batch, in two forms. Symbol: B batch.

exact (the default): the sigmoid cross-entropy on logits,

    loss = mean_b [ max(z, 0) - z * y + log(1 + exp(-|z|)) ]     (= -y log p - (1-y) log(1-p))
    dloss/dz = (sigmoid(z) - y) / B

The max/abs form never exponentiates a large positive number, so it is finite for any z.

keras: what the reference trains, Keras's binary_crossentropy on probabilities (TF 2.4,
keras/backend.py, from_logits=False). DeepCTR's prediction layer ends in a reshape of the sigmoid,
not in the sigmoid op itself, so Keras does not recover the logits and computes, with eps = 1e-7
in the logits' dtype:

    p   = sigmoid(z)
    p_c = max(min(p, 1 - eps), eps)                              (clip_by_value: minimum, then maximum)
    loss = mean_b -[ y log(p_c + eps) + (1 - y) log(1 - p_c + eps) ]
    dloss/dp = -[ y / (p_c + eps) - (1 - y) / (1 - p_c + eps) ] / B     where eps <= p <= 1 - eps
             = 0                                                         elsewhere
    dloss/dz = dloss/dp * p (1 - p)

The gradient of minimum passes where p <= 1 - eps and that of maximum where min(p, 1 - eps) >= eps
(TF's Minimum/Maximum gradients select with less_equal/greater_equal), so the boundary values
themselves pass. Outside, the gradient is exactly zero: a sample the model is sure of, rightly or
wrongly (|z| above about 16), no longer trains it. For step-by-step comparison with the reference.
"""
import numpy as np

from dataio.arrays import array_module_of

KERAS_EPSILON = 1e-7     # keras.backend.epsilon()
LOSS_FORMS = ("exact", "keras")


def sigmoid(z):
    xp = array_module_of(z)
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def bce_with_logits_forward(logits, labels):
    """logits (B,), labels (B,) in {0, 1} -> scalar loss: a Python float on the host, a 0-d array on a
    device (float() of it waits for the device; the training loop reads it with its divergence check)."""
    xp = array_module_of(logits)
    per_sample = xp.maximum(logits, 0) - logits * labels + xp.log1p(xp.exp(-xp.abs(logits)))
    loss = per_sample.mean()
    return (float(loss) if xp is np else loss), (logits, labels)


def bce_with_logits_backward(cache):
    """-> dlogits (B,)."""
    logits, labels = cache
    return (sigmoid(logits) - labels) / logits.shape[0]


def keras_bce_forward(logits, labels):
    """logits (B,), labels (B,) -> (Keras's clipped-probability loss, cache); the loss as in
    bce_with_logits_forward: a Python float on the host, a 0-d array on a device."""
    xp = array_module_of(logits)
    dtype = logits.dtype.type
    eps = dtype(KERAS_EPSILON)
    labels = labels.astype(logits.dtype)
    p = sigmoid(logits)                                              # (B,)
    p_clipped = xp.maximum(xp.minimum(p, dtype(1.0) - eps), eps)     # (B,)
    per_sample = -(labels * xp.log(p_clipped + eps) + (dtype(1.0) - labels) * xp.log(dtype(1.0) - p_clipped + eps))
    loss = per_sample.mean()
    return (float(loss) if xp is np else loss), (p, p_clipped, labels)


def keras_bce_backward(cache):
    """-> dlogits (B,): zero where p was clipped."""
    p, p_clipped, labels = cache
    xp = array_module_of(p)
    dtype = p.dtype.type
    eps = dtype(KERAS_EPSILON)
    one = dtype(1.0)
    dp = -(labels / (p_clipped + eps) - (one - labels) / (one - p_clipped + eps)) / dtype(p.shape[0])
    inside = (p <= one - eps) & (p >= eps)
    return xp.where(inside, dp, dtype(0.0)) * (p * (one - p))


LOSSES = {"exact": (bce_with_logits_forward, bce_with_logits_backward),
          "keras": (keras_bce_forward, keras_bce_backward)}


def loss_layer(form: str):
    """'exact' | 'keras' -> (forward, backward)."""
    if form not in LOSSES:
        raise ValueError(f"unknown loss form {form!r}; choose one of {LOSS_FORMS}")
    return LOSSES[form]
