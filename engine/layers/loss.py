"""Sigmoid binary cross-entropy on logits, averaged over the batch. Symbol: B batch.

    loss = mean_b [ max(z, 0) - z * y + log(1 + exp(-|z|)) ]     (= -y log p - (1-y) log(1-p))
    dloss/dz = (sigmoid(z) - y) / B

The max/abs form never exponentiates a large positive number, so it is finite for any z.
"""
from dataio.arrays import array_module_of


def sigmoid(z):
    xp = array_module_of(z)
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def bce_with_logits_forward(logits, labels):
    """logits (B,), labels (B,) in {0, 1} -> scalar loss (a Python float)."""
    xp = array_module_of(logits)
    per_sample = xp.maximum(logits, 0) - logits * labels + xp.log1p(xp.exp(-xp.abs(logits)))
    return float(per_sample.mean()), (logits, labels)


def bce_with_logits_backward(cache):
    """-> dlogits (B,)."""
    logits, labels = cache
    return (sigmoid(logits) - labels) / logits.shape[0]
