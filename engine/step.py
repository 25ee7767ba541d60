"""One training step, in the order of Algorithm 1 (arXiv 2204.06240), with engine/cowclip.py's names.
Symbols: V table rows, K embedding dim, U unique ids in the batch.

    1. loss and mean-over-batch gradients          model.loss -> weight grads, table RowGrads
    2. the weights (every parameter but the tables): + L2 term, Adam with the warmed-up lr
    3. each table, row k of the batch at a time:
         a. g_k += 2 lambda w_k         if l2_before_clip(form)     (reference form)
         b. g_k *= min(1, clip_k / ||g_k||)   clip_rows(config.rule)  (embed.table only)
         c. g_k += 2 lambda w_k         otherwise                     (paper form)
         d. Adam with the embedding lr: `lazy` on the batch's rows, `dense` on every row; an
            absent row's gradient is 2 lambda w, clipped as seen once if clips_absent_rows(form)
            (engine.cowclip.absent_row_scale, fused into the table Adam kernel)

Words, one meaning each, in the engine and the models:
    tables       the embedding tables, embed.table (V, K) and linear.table (V, 1): RowGrad gradients,
                 L2 and CowClip as above, Adam by the kernels of engine/kernels/adam.py
    weights      every other parameter (dnn.*, cross.*, head.W, linear.dense_w, bias): plain arrays,
                 updated by update_weights (backend entry adam_weights, engine/kernels/weights_adam.py)
    features     the dense input features of a batch, batch.dense (B, D) (the data format's name)
    Dense        Keras's name of a fully connected layer (dense_forward in engine/layers/mlp.py)
    embed_optim  'dense' | 'lazy' (the reference's CLI values, kept): table Adam on every row each
                 step, or on the batch's rows only
    reference    bytedance/LargeBatchCTR, the authors' code (clip_form 'reference', REFERENCE_DEFAULTS)
    *_numpy      a kernel's NumPy form: backend numpy's entry and the test oracle of the fused
                 <entry>_cpu and <entry>_cuda kernels (engine/backend.py)
    update t     Adam's update count, AdamState.updates, which is also the run's global step (the
                 steps taken; engine.train.Job.global_step reads it)
    rule         a clip rule (engine.cowclip.CLIP_RULES, StepConfig.rule) or a hyperparameter scaling
                 rule (engine.scaling.SCALE_RULES, --scale-rule): never the same names
"""
from dataclasses import dataclass

from engine.cowclip import COWCLIP, ClipRule, check_form, clip_audit, clip_rows, clips_absent_rows, l2_before_clip
from engine.optim import (EMBED_MODES, AdamConfig, AdamState, bias_corrected_lr, keras_adam_config, tf_float32,
                          warmup_lr, warmup_lr_float32)


@dataclass(frozen=True)
class StepConfig:
    lr: float = 8e-4                 # learning rate of the weights (after scaling)
    lr_embed: float = 1e-4           # learning rate of the tables
    l2: float = 1e-5                 # lambda of lambda * sum(W^2) on tables and the linear kernel
    clip: float = 0.0                # CowClip r; 0 turns CowClip off
    bound: float = 0.0               # zeta (paper form) or the reference's --bound
    clip_form: str = "reference"     # 'paper' | 'reference' (see engine/cowclip.py)
    embed_optim: str = "dense"       # tables: 'dense' every row each step | 'lazy' the batch's rows
    warmup_updates: int = 0          # warm-up length of lr, in updates
    adam: AdamConfig = AdamConfig()
    rule: ClipRule = COWCLIP         # CowClip or one of its ablations (see engine/cowclip.py)
    keras_constants: bool = False    # lr, lr_embed, Adam's constants and the warm-up as TF 2.4 holds them
                                     # (float32; see optimizer_constants): --loss-form keras

    def __post_init__(self):
        if self.embed_optim not in EMBED_MODES:
            raise ValueError(f"embed_optim must be one of {EMBED_MODES}, got {self.embed_optim!r}")
        check_form(self.clip_form)


def train_step(model, params: dict, state: AdamState, batch, config: StepConfig, kernels,
               audit: bool = False, rng=None) -> dict:
    """Steps 1-3 on one batch. -> info with the batch's mean loss."""
    loss, grads = model.loss(params, batch, kernels, training=True, rng=rng)      # 1
    info = apply_gradients(model, params, grads, state, config, kernels, audit)   # 2, 3
    info["loss"] = loss
    return info


def apply_gradients(model, params: dict, grads: dict, state: AdamState, config: StepConfig, kernels,
                    audit: bool = False) -> dict:
    """Steps 2 and 3, in place on params and state. -> info (lr used, audit if asked)."""
    t = state.updates + 1
    info = {"lr": update_weights(model, params, grads, state, config, t, kernels)}
    info.update(update_tables(model, params, grads, state, config, kernels, t, audit))
    state.updates = t
    return info


def update_weights(model, params: dict, grads: dict, state: AdamState, config: StepConfig, t: int,
                   kernels) -> float:
    """Step 2: L2 term and Adam (update number t) on every parameter but the tables, with the
    backend's `adam_weights`. -> the lr used."""
    l2_weights = model.l2_weights(config.l2)
    tables = set(model.table_names())
    names = [name for name in params if name not in tables]
    lr, _, constants = optimizer_constants(config, params[names[0]].dtype if names else "float32")
    schedule = warmup_lr_float32 if config.keras_constants else warmup_lr
    lr_weights = schedule(lr, t - 1, config.warmup_updates)
    lr_t = bias_corrected_lr(lr_weights, t, constants)
    l2s = [l2_weights.get(name, 0.0) for name in names]
    kernels.adam_weights(params, grads, state, names, l2s, lr_t, constants)
    return lr_weights


def optimizer_constants(config: StepConfig, dtype) -> tuple[float, float, AdamConfig]:
    """(lr, lr_embed, Adam's constants) of the step: as configured, or with keras_constants as TF 2.4's
    Keras Adam holds them for parameters of `dtype`: lr, lr_embed, beta1, beta2 rounded to float32
    (its hyperparameters are float32 variables), epsilon 1e-7 in the parameters' dtype."""
    if not config.keras_constants:
        return config.lr, config.lr_embed, config.adam
    return tf_float32(config.lr), tf_float32(config.lr_embed), keras_adam_config(dtype)


def update_tables(model, params: dict, grads: dict, state: AdamState, config: StepConfig, kernels, t: int,
                  audit: bool = False) -> dict:
    """Step 3 on every table (update number t). -> audit info of the clipped table, if asked."""
    info = {}
    l2_weights = model.l2_weights(config.l2)
    _, lr_embed, a = optimizer_constants(config, params[model.table_names()[0]].dtype)
    lr_t = bias_corrected_lr(lr_embed, t, a)
    ratio, floor = config.rule.constants(config.clip_form, config.clip, config.bound, model.config.embed_dim)
    for name in model.table_names():
        table, grad = params[name], grads[name]          # (V, K); RowGrad ids (U,), rows (U, K), counts (U,)
        lam = l2_weights.get(name, 0.0)
        clipped = config.clip > 0 and name in model.clipped_tables()
        l2_first = not clipped or l2_before_clip(config.clip_form)
        if lam and l2_first:                                                       # 3a
            grad.rows[...] += 2.0 * lam * table[grad.ids]
        if clipped:                                                                # 3b
            scales = clip_rows(config.rule, grad, table, model.offsets, kernels, ratio, floor)
            if audit:
                info[f"audit.{name}"] = clip_audit(grad, table, scales, model.offsets,
                                                   model.schema.sparse_names, kernels.to_host)
        if lam and not l2_first:                                                   # 3c
            grad.rows[...] += 2.0 * lam * table[grad.ids]
        if config.embed_optim == "lazy":                                           # 3d
            kernels.adam_rows(table, state.m[name], state.v[name], grad.ids, grad.rows,
                              lr_t, a.beta1, a.beta2, a.epsilon)
        else:
            clip_absent = clipped and clips_absent_rows(config.clip_form)
            kernels.adam_table(table, state.m[name], state.v[name], grad.ids, grad.rows, lam,
                               clip_absent, ratio, floor, lr_t, a.beta1, a.beta2, a.epsilon)
    return info
