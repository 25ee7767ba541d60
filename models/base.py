"""What every CTR model shares: parameters, the range check of ids, the loss, and the pieces of
the embedding front. Symbols: B batch, F sparse fields, D dense features, K embedding dim,
V table rows, d = F*K + D the width of the deep input.

    ids       = sparse + offsets                          (B, F)  rows of the shared tables
    wide      = linear.table[ids]                         (B, F, 1)
    emb       = embed.table[ids]                          (B, F, K)
    features  = batch.dense                               (B, D)
    logit     = sum_f wide + features . linear.dense_w  +  the model's own terms  +  bias
    loss      = mean BCE(logit, label)

A model is `params` (a flat dict of arrays with stable names) plus `loss(params, batch) ->
(loss, grads)`; `grads` has the same keys. The weights get array gradients; the two tables get
`RowGrad(ids, rows, counts)` (see engine/layers/embedding.py), sharing ids and counts. Each model
writes out its whole `forward`, layer by layer, and its `backward` as the forward's calls in
reverse order (llm.c's gpt2_backward), in its own file. `kernels` (a backend, engine/backend.py) is
passed down to every layer that has backend kernels; without one (`logits(params, batch)`), the
layers run their plain NumPy/CuPy forms.

L2 penalties are not in `loss`: they depend on the optimizer mode and, in the reference form,
enter between the backward pass and CowClip, so the step applies them (engine/step.py) with the
weights from `l2_weights`.
"""
from dataclasses import dataclass

import numpy as np

from dataio.arrays import array_module_of
from engine.layers.loss import bce_with_logits_backward, bce_with_logits_forward
from models.init import glorot_normal
from dataio.schema import Schema

EMBED_TABLE = "embed.table"
LINEAR_TABLE = "linear.table"


@dataclass(frozen=True)
class ModelConfig:
    embed_dim: int = 10                    # K, --sparse_embed_dim
    dnn_hidden: tuple = (400, 400, 400)
    cross_layers: int = 3
    init_stddev: float = 1e-4              # embedding init normal(0, init_stddev)
    dropout: float = 0.0
    num_experts: int = 4                   # DCN-Mix
    low_rank: int = 32                     # DCN-Mix
    l2_cross: float = 1e-5                 # DeepCTR's l2_reg_cross default, not scaled
    dtype: str = "float32"


class CTRModel:
    name = "base"
    uses_embedding = True  # False for LR, which has only the 1-dim linear table

    def __init__(self, schema: Schema, config: ModelConfig = ModelConfig()):
        self.schema = schema
        self.config = config
        self.offsets = schema.offsets
        self.vocab_sizes = np.asarray(schema.vocab_sizes, dtype=np.int64)
        if schema.total_rows >= 2**31:
            raise ValueError("the shared table has 2^31 rows or more; int32 row ids would overflow")

    # ----------------------------------------------------------------------------------------
    # parameters

    @property
    def input_width(self) -> int:
        """d: width of the deep/cross input, concat(flatten(emb), dense)."""
        return self.schema.num_fields * self.config.embed_dim + self.schema.num_dense

    def init_params(self, seed: int = 1024) -> dict:
        """Host (NumPy) arrays in the config's dtype, drawn from `seed`."""
        rng = np.random.default_rng(seed)
        V, D = self.schema.total_rows, self.schema.num_dense
        params = {
            LINEAR_TABLE: np.zeros((V, 1)),            # DeepCTR: linear embeddings start at zero
            "linear.dense_w": glorot_normal(rng, (D, 1))[:, 0] if D else np.zeros(0),
            "bias": np.zeros(1),
        }
        if self.uses_embedding:
            params[EMBED_TABLE] = rng.normal(0.0, self.config.init_stddev, (V, self.config.embed_dim))
        params.update(self.init_body(rng))
        return {name: np.ascontiguousarray(value, dtype=self.config.dtype) for name, value in params.items()}

    def init_body(self, rng) -> dict:
        """The parameters beyond the tables, linear.dense_w and bias."""
        return {}

    def param_shapes(self) -> dict:
        """name -> shape of every parameter init_params would make, without allocating the tables."""
        V, D, K = self.schema.total_rows, self.schema.num_dense, self.config.embed_dim
        shapes = {LINEAR_TABLE: (V, 1), "linear.dense_w": (D,), "bias": (1,)}
        if self.uses_embedding:
            shapes[EMBED_TABLE] = (V, K)
        shapes.update({name: a.shape for name, a in self.init_body(np.random.default_rng(0)).items()})
        return shapes

    def table_names(self) -> tuple:
        return (LINEAR_TABLE, EMBED_TABLE) if self.uses_embedding else (LINEAR_TABLE,)

    def clipped_tables(self) -> tuple:
        """Tables CowClip applies to: not the 1-dim linear table (as the reference code)."""
        return (EMBED_TABLE,) if self.uses_embedding else ()

    def l2_weights(self, l2: float) -> dict:
        """name -> lambda of the penalty lambda * sum(p^2): the reference's l2_reg_embedding and
        l2_reg_linear (both --l2) on the tables and the linear kernel, l2_reg_cross on cross
        kernels; none on the DNN (l2_reg_dnn = 0) or on biases."""
        weights = {name: l2 for name in self.table_names()}
        weights["linear.dense_w"] = l2
        weights.update(self.body_l2_weights())
        return weights

    def body_l2_weights(self) -> dict:
        return {}

    # ----------------------------------------------------------------------------------------
    # forward / backward

    def global_ids(self, sparse):
        """sparse (B, F) field-local ids -> (B, F) rows of the shared tables, range-checked."""
        xp = array_module_of(sparse)
        if sparse.ndim != 2 or sparse.shape[1] != self.schema.num_fields:
            raise ValueError(f"sparse ids have shape {tuple(sparse.shape)}, "
                             f"expected (batch, {self.schema.num_fields})")
        low, high = sparse.min(axis=0), sparse.max(axis=0)
        vocab = xp.asarray(self.vocab_sizes)
        bad = (low < 0) | (high >= vocab)
        if bool(bad.any()):
            f = int(xp.argmax(bad))
            raise ValueError(f"sparse field {self.schema.sparse_names[f]!r} (column {f}) has ids in "
                             f"[{int(low[f])}, {int(high[f])}], outside its vocabulary [0, {int(vocab[f])})")
        return sparse.astype(xp.int64) + xp.asarray(self.offsets)[None, :]

    def features(self, batch):
        """batch.dense (B, D), width-checked: the dense input features."""
        features = batch.dense
        if features.shape[-1] != self.schema.num_dense:
            raise ValueError(f"dense features have width {features.shape[-1]}, expected {self.schema.num_dense}")
        return features

    def forward(self, params, batch, training: bool = False, rng=None, kernels=None):
        """-> logits (B,), cache. Each model writes it out, layer by layer."""
        raise NotImplementedError

    def backward(self, dlogits, cache, kernels) -> dict:
        """dlogits (B,) -> grads with the keys of params: the forward's calls in reverse order."""
        raise NotImplementedError

    def logits(self, params, batch, kernels=None):
        return self.forward(params, batch, kernels=kernels)[0]

    def loss(self, params, batch, kernels, training: bool = True, rng=None):
        """-> (mean BCE loss as a float, grads)."""
        logits, cache = self.forward(params, batch, training, rng, kernels)
        loss, loss_cache = bce_with_logits_forward(logits, batch.label)
        dlogits = bce_with_logits_backward(loss_cache)
        return loss, self.backward(dlogits, cache, kernels)

    # ----------------------------------------------------------------------------------------
    # helpers for the towers that read x0 = concat(flatten(emb), features), as DeepCTR's
    # combined_dnn_input

    @staticmethod
    def deep_input(emb, features):
        xp = array_module_of(emb)
        return xp.concatenate([emb.reshape(emb.shape[0], -1), features.astype(emb.dtype)], axis=1)  # (B, d)

    def split_deep_input_grad(self, dx0):
        """dx0 (B, d) -> demb (B, F, K); the features' part is data and needs no gradient."""
        F, K = self.schema.num_fields, self.config.embed_dim
        return dx0[:, :F * K].reshape(dx0.shape[0], F, K)
