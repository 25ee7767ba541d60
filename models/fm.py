"""FM: the linear part plus the factorization machine's pairwise term (the reference's wideFM).

    logit = linear + fm(emb) + bias
"""
from engine.layers.embedding import embedding_backward, embedding_forward, index_batch_ids
from engine.layers.fm import fm_backward, fm_forward
from engine.layers.linear import linear_backward, linear_forward
from models.base import EMBED_TABLE, LINEAR_TABLE, CTRModel


class FM(CTRModel):
    name = "fm"

    def forward(self, params, batch, kernels, training=False, rng=None):
        features = self.features(batch)                                               # (B, D)
        ids = self.batch_ids(batch)                                                   # (B, F)
        wide, _ = embedding_forward(params[LINEAR_TABLE], ids)                        # (B, F, 1)
        emb, _ = embedding_forward(params[EMBED_TABLE], ids)                          # (B, F, K)
        linear_logit, linear_cache = linear_forward(wide, features, params["linear.dense_w"])  # (B,)
        fm_logit, fm_cache = fm_forward(emb, kernels)                                  # (B,)
        logits = linear_logit + params["bias"][0] + fm_logit                          # (B,)
        return logits, (ids, linear_cache, fm_cache)

    def backward(self, dlogits, cache, kernels):
        ids, linear_cache, fm_cache = cache
        grads = {"bias": dlogits.sum(keepdims=True)}
        demb = fm_backward(dlogits, fm_cache, None, kernels)                         # (B, F, K)
        dwide, _, grads["linear.dense_w"] = linear_backward(dlogits, linear_cache)    # (B, F, 1)
        index = index_batch_ids(ids, self.schema.total_rows, kernels)   # one index for both tables
        grads[EMBED_TABLE] = embedding_backward(demb, index, kernels)
        grads[LINEAR_TABLE] = embedding_backward(dwide, index, kernels)
        return grads
