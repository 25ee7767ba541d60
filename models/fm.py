"""FM: the linear part plus the factorization machine's pairwise term (the reference's wideFM).

    logit = linear + fm(emb) + bias
"""
from engine.layers.fm import fm_backward, fm_forward
from models.base import CTRModel


class FM(CTRModel):
    name = "fm"

    def body_forward(self, params, emb, dense, training, rng, kernels=None):
        return fm_forward(emb, kernels)

    def body_backward(self, dlogits, cache, kernels=None):
        return {"emb": fm_backward(dlogits, cache, kernels=kernels)}
