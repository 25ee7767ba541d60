"""DeepFM: the linear part, the FM term and a DNN, all reading the same embeddings.

    emb   = embed.table[ids]                              (B, F, K)
    x0    = concat(flatten(emb), dense)                   (B, F*K + D)
    logit = linear + fm(emb) + head(dnn(x0)) + bias
"""
from engine.layers.fm import fm_backward, fm_forward
from models.base import CTRModel
from models.parts import dnn_backward, dnn_forward, head_backward, head_forward, init_dnn, init_head


class DeepFM(CTRModel):
    name = "deepfm"

    def init_body(self, rng):
        hidden = self.config.dnn_hidden
        return {**init_dnn(rng, self.input_width, hidden), **init_head(rng, hidden[-1])}

    def body_forward(self, params, emb, dense, training, rng, kernels=None):
        fm_logit, fm_cache = fm_forward(emb, kernels)                       # (B,)
        x0 = self.deep_input(emb, dense)                                    # (B, d)
        h, dnn_cache = dnn_forward(params, x0, len(self.config.dnn_hidden), self.config.dropout, training, rng,
                                   kernels)
        dnn_logit, head_cache = head_forward(params, h)                     # (B,)
        return fm_logit + dnn_logit, (fm_cache, dnn_cache, head_cache)

    def body_backward(self, dlogits, cache, kernels=None):
        fm_cache, dnn_cache, head_cache = cache
        grads = {}
        dh = head_backward(dlogits, head_cache, grads, kernels)
        dx0 = dnn_backward(dh, dnn_cache, grads, kernels)
        # the FM's part and the DNN's, summed as the FM backward writes
        grads["emb"] = fm_backward(dlogits, fm_cache, self.split_deep_input_grad(dx0), kernels)   # (B, F, K)
        return grads
