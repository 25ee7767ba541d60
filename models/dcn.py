"""Deep & Cross networks: a cross network and a DNN side by side on x0, then one output Dense.

    x0    = concat(flatten(emb), features)                (B, d)
    logit = linear + head(concat(cross(x0), dnn(x0))) + bias

DCN uses cross v1, DCNv2 the full-rank cross v2, DCNMix the low-rank mixture of experts (the
model that the reference code runs under the name "DCNv2"). See engine/layers/cross.py.
"""
import numpy as np

from dataio.arrays import array_module_of
from engine.layers.cross import (cross_mix_backward, cross_mix_forward, cross_v1_backward,
                                 cross_v1_forward, cross_v2_backward, cross_v2_forward)
from engine.layers.embedding import embedding_backward, embedding_forward, index_batch_ids
from engine.layers.linear import linear_backward, linear_forward
from models.base import EMBED_TABLE, LINEAR_TABLE, CTRModel
from models.init import glorot_normal, glorot_uniform
from models.parts import dnn_backward, dnn_forward, head_backward, head_forward, init_dnn, init_head


class _DeepAndCross(CTRModel):
    def init_body(self, rng):
        hidden = self.config.dnn_hidden
        params = self.init_cross(rng)
        params.update(init_dnn(rng, self.input_width, hidden))
        params.update(init_head(rng, self.input_width + hidden[-1]))
        return params

    def forward(self, params, batch, training=False, rng=None, kernels=None):
        xp = array_module_of(batch.dense)
        features = self.features(batch)                                               # (B, D)
        ids = self.global_ids(batch.sparse)                                           # (B, F)
        wide, _ = embedding_forward(params[LINEAR_TABLE], ids)                        # (B, F, 1)
        emb, _ = embedding_forward(params[EMBED_TABLE], ids)                          # (B, F, K)
        linear_logit, linear_cache = linear_forward(wide, features, params["linear.dense_w"])  # (B,)
        x0 = self.deep_input(emb, features)                                           # (B, d)
        cross_out, cross_cache = self.cross_forward(params, x0)                       # (B, d)
        h, dnn_cache = dnn_forward(params, x0, len(self.config.dnn_hidden), self.config.dropout, training, rng,
                                   kernels)
        stack = xp.concatenate([cross_out, h], axis=1)                                # (B, d + H)
        head_logit, head_cache = head_forward(params, stack)                          # (B,)
        logits = linear_logit + params["bias"][0] + head_logit                        # (B,)
        return logits, (ids, linear_cache, cross_cache, dnn_cache, head_cache)

    def backward(self, dlogits, cache, kernels):
        ids, linear_cache, cross_cache, dnn_cache, head_cache = cache
        grads = {"bias": dlogits.sum(keepdims=True)}
        dstack = head_backward(dlogits, head_cache, grads, kernels)                      # (B, d + H)
        d = self.input_width
        dx0 = dnn_backward(dstack[:, d:], dnn_cache, grads, kernels)                     # (B, d)
        dx0 = dx0 + self.cross_backward(dstack[:, :d], cross_cache, grads)            # (B, d)
        demb = self.split_deep_input_grad(dx0)                                        # (B, F, K)
        dwide, _, grads["linear.dense_w"] = linear_backward(dlogits, linear_cache)    # (B, F, 1)
        index = index_batch_ids(ids, self.schema.total_rows, kernels)   # one index for both tables
        grads[EMBED_TABLE] = embedding_backward(demb, index, kernels)
        grads[LINEAR_TABLE] = embedding_backward(dwide, index, kernels)
        return grads

    def layers(self):
        return range(self.config.cross_layers)


class DCN(_DeepAndCross):
    name = "dcn"

    def init_cross(self, rng):
        d, params = self.input_width, {}
        for l in self.layers():
            params[f"cross.{l}.w"] = glorot_normal(rng, (d, 1))[:, 0]
            params[f"cross.{l}.b"] = np.zeros(d)
        return params

    def body_l2_weights(self):
        return {f"cross.{l}.w": self.config.l2_cross for l in self.layers()}

    def cross_forward(self, params, x0):
        return cross_v1_forward(x0, [params[f"cross.{l}.w"] for l in self.layers()],
                                [params[f"cross.{l}.b"] for l in self.layers()])

    def cross_backward(self, dout, cache, grads):
        dx0, dws, dbs = cross_v1_backward(dout, cache)
        for l, (dw, db) in enumerate(zip(dws, dbs)):
            grads[f"cross.{l}.w"], grads[f"cross.{l}.b"] = dw, db
        return dx0


class DCNv2(_DeepAndCross):
    name = "dcnv2full"   # the reference's "DCNv2" is DCNMix (models/__init__.py)

    def init_cross(self, rng):
        d, params = self.input_width, {}
        for l in self.layers():
            params[f"cross.{l}.W"] = glorot_normal(rng, (d, d))
            params[f"cross.{l}.b"] = np.zeros(d)
        return params

    def body_l2_weights(self):
        return {f"cross.{l}.W": self.config.l2_cross for l in self.layers()}

    def cross_forward(self, params, x0):
        return cross_v2_forward(x0, [params[f"cross.{l}.W"] for l in self.layers()],
                                [params[f"cross.{l}.b"] for l in self.layers()])

    def cross_backward(self, dout, cache, grads):
        dx0, dWs, dbs = cross_v2_backward(dout, cache)
        for l, (dW, db) in enumerate(zip(dWs, dbs)):
            grads[f"cross.{l}.W"], grads[f"cross.{l}.b"] = dW, db
        return dx0


class DCNMix(_DeepAndCross):
    name = "dcnmix"

    def init_cross(self, rng):
        d, E, r = self.input_width, self.config.num_experts, self.config.low_rank
        params = {}
        for l in self.layers():
            params[f"cross.{l}.U"] = glorot_normal(rng, (E, d, r))
            params[f"cross.{l}.V"] = glorot_normal(rng, (E, d, r))
            params[f"cross.{l}.C"] = glorot_normal(rng, (E, r, r))
            params[f"cross.{l}.b"] = np.zeros(d)
        # one Dense(1, no bias) per expert, Keras's default glorot_uniform, shared by all layers
        params["cross.gate"] = np.concatenate([glorot_uniform(rng, (d, 1)) for _ in range(E)], axis=1)
        return params

    def body_l2_weights(self):
        return {f"cross.{l}.{m}": self.config.l2_cross for l in self.layers() for m in "UVC"}

    def cross_forward(self, params, x0):
        per_layer = [[params[f"cross.{l}.{m}"] for l in self.layers()] for m in "UVCb"]
        return cross_mix_forward(x0, *per_layer, params["cross.gate"])

    def cross_backward(self, dout, cache, grads):
        dx0, dUs, dVs, dCs, dbs, grads["cross.gate"] = cross_mix_backward(dout, cache)
        for l in self.layers():
            for m, dparams in zip("UVCb", (dUs, dVs, dCs, dbs)):
                grads[f"cross.{l}.{m}"] = dparams[l]
        return dx0
