"""WDL (Wide & Deep): the linear part plus a DNN over concat(flatten(emb), dense).

    logit = linear + head(dnn(x0)) + bias
"""
from models.base import CTRModel
from models.parts import dnn_backward, dnn_forward, head_backward, head_forward, init_dnn, init_head


class WDL(CTRModel):
    name = "wdl"

    def init_body(self, rng):
        hidden = self.config.dnn_hidden
        return {**init_dnn(rng, self.input_width, hidden), **init_head(rng, hidden[-1])}

    def body_forward(self, params, emb, dense, training, rng, kernels=None):
        x0 = self.deep_input(emb, dense)                                    # (B, d)
        h, dnn_cache = dnn_forward(params, x0, len(self.config.dnn_hidden), self.config.dropout, training, rng,
                                   kernels)
        logit, head_cache = head_forward(params, h)
        return logit, (dnn_cache, head_cache)

    def body_backward(self, dlogits, cache, kernels=None):
        dnn_cache, head_cache = cache
        grads = {}
        dh = head_backward(dlogits, head_cache, grads, kernels)
        dx0 = dnn_backward(dh, dnn_cache, grads, kernels)
        grads["emb"] = self.split_deep_input_grad(dx0)
        return grads
