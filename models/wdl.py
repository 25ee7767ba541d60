"""WDL (Wide & Deep): the linear part plus a DNN over x0 = concat(flatten(emb), features).

    logit = linear + head(dnn(x0)) + bias
"""
from engine.layers.embedding import embedding_backward, embedding_forward, index_batch_ids
from engine.layers.linear import linear_backward, linear_forward
from models.base import EMBED_TABLE, LINEAR_TABLE, CTRModel
from models.parts import dnn_backward, dnn_forward, head_backward, head_forward, init_dnn, init_head


class WDL(CTRModel):
    name = "wdl"

    def init_body(self, rng):
        hidden = self.config.dnn_hidden
        return {**init_dnn(rng, self.input_width, hidden), **init_head(rng, hidden[-1])}

    def forward(self, params, batch, kernels, training=False, rng=None):
        features = self.features(batch)                                               # (B, D)
        ids = self.batch_ids(batch)                                                   # (B, F)
        wide, _ = embedding_forward(params[LINEAR_TABLE], ids)                        # (B, F, 1)
        emb, _ = embedding_forward(params[EMBED_TABLE], ids)                          # (B, F, K)
        linear_logit, linear_cache = linear_forward(wide, features, params["linear.dense_w"])  # (B,)
        x0 = self.deep_input(emb, features)                                           # (B, d)
        h, dnn_cache = dnn_forward(params, x0, len(self.config.dnn_hidden), self.config.dropout, training, rng,
                                   kernels)
        dnn_logit, head_cache = head_forward(params, h)                               # (B,)
        logits = linear_logit + params["bias"][0] + dnn_logit                         # (B,)
        return logits, (ids, linear_cache, dnn_cache, head_cache)

    def backward(self, dlogits, cache, kernels):
        ids, linear_cache, dnn_cache, head_cache = cache
        grads = {"bias": dlogits.sum(keepdims=True)}
        dh = head_backward(dlogits, head_cache, grads, kernels)                          # (B, H)
        dx0 = dnn_backward(dh, dnn_cache, grads, kernels)                                # (B, d)
        demb = self.split_deep_input_grad(dx0)                                        # (B, F, K)
        dwide, _, grads["linear.dense_w"] = linear_backward(dlogits, linear_cache)    # (B, F, 1)
        index = index_batch_ids(ids, self.schema.total_rows, kernels)   # one index for both tables
        grads[EMBED_TABLE] = embedding_backward(demb, index, kernels)
        grads[LINEAR_TABLE] = embedding_backward(dwide, index, kernels)
        return grads
