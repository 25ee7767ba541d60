"""LR: logistic regression on the linear (wide) part alone.

    logit = sum_f linear.table[ids[f]] + features . linear.dense_w + bias
"""
from engine.layers.embedding import embedding_backward, embedding_forward, index_batch_ids
from engine.layers.linear import linear_backward, linear_forward
from models.base import LINEAR_TABLE, CTRModel


class LR(CTRModel):
    name = "lr"
    has_embed_table = False

    def forward(self, params, batch, kernels, training=False, rng=None):
        features = self.features(batch)                                               # (B, D)
        ids = self.batch_ids(batch)                                                   # (B, F)
        wide, _ = embedding_forward(params[LINEAR_TABLE], ids)                        # (B, F, 1)
        linear_logit, linear_cache = linear_forward(wide, features, params["linear.dense_w"])  # (B,)
        logits = linear_logit + params["bias"][0]                                     # (B,)
        return logits, (ids, linear_cache)

    def backward(self, dlogits, cache, kernels):
        ids, linear_cache = cache
        grads = {"bias": dlogits.sum(keepdims=True)}
        dwide, _, grads["linear.dense_w"] = linear_backward(dlogits, linear_cache)    # (B, F, 1)
        index = index_batch_ids(ids, self.schema.total_rows, kernels)
        grads[LINEAR_TABLE] = embedding_backward(dwide, index, kernels)
        return grads
