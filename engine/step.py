"""One training step, in the order of Algorithm 1 (arXiv 2204.06240):

    1. loss and mean-over-batch gradients              model.loss -> dense grads, RowGrads
    2. dense weights: + L2 term, Adam with the (warmed-up) dense learning rate
    3. each table: L2, CowClip (embed.table only), Adam with the embedding learning rate

Where the L2 term 2 * lambda * w enters a table's gradient depends on the CowClip form:
`reference` adds it before the clip (Keras puts the regulariser's gradient into the gradient
that train.py clips), `paper` after. In `dense` embedding mode rows absent from the batch get
2 * lambda * w too (the reference's table-wide penalty), clipped as rows seen once in the
reference form; in `lazy` mode they are left alone.
"""
from dataclasses import dataclass

from engine.cowclip import clip_audit, clip_constants, cowclip
from engine.kernels.adam import NO_CLIP
from engine.kernels.dense_adam import adam_dense_weights_reference
from engine.optim import EMBED_MODES, AdamConfig, AdamState, bias_corrected_lr, warmup_lr


@dataclass(frozen=True)
class StepConfig:
    lr: float = 8e-4                 # dense learning rate (after scaling)
    lr_embed: float = 1e-4           # embedding learning rate
    l2: float = 1e-5                 # lambda of lambda * sum(W^2) on tables and the linear kernel
    clip: float = 0.0                # CowClip r; 0 turns CowClip off
    bound: float = 0.0               # zeta (paper form) or the reference's --bound
    clip_form: str = "reference"     # 'paper' | 'reference' (see engine/cowclip.py)
    embed_optim: str = "dense"       # 'dense' | 'lazy' (see engine/optim.py)
    warmup_updates: int = 0          # dense-lr warm-up length in updates
    adam: AdamConfig = AdamConfig()

    def __post_init__(self):
        if self.embed_optim not in EMBED_MODES:
            raise ValueError(f"embed_optim must be one of {EMBED_MODES}, got {self.embed_optim!r}")
        clip_constants(self.clip_form, 1.0, 0.0, 1)  # validates the form


def apply_gradients(model, params: dict, grads: dict, state: AdamState, config: StepConfig, kernels,
                    audit: bool = False, clip=cowclip, constants=clip_constants) -> dict:
    """Steps 2 and 3 above, in place on params and state. -> info (lr used, audit if asked).

    clip, constants: the row clip and its (ratio, floor); CowClip unless a study swaps in an
    ablation (validate/ablations.py) with the same signatures."""
    t = state.updates + 1
    info = {"lr": update_dense_weights(model, params, grads, state, config, t, kernels)}
    info.update(update_tables(model, params, grads, state, config, kernels, t, audit, clip, constants))
    state.updates = t
    return info


def update_dense_weights(model, params: dict, grads: dict, state: AdamState, config: StepConfig, t: int,
                         kernels=None) -> float:
    """Step 2: L2 term and Adam (update number t) on every parameter but the tables, with the
    backend's `adam_dense_weights` (the plain loop without a backend). -> the dense lr."""
    l2_weights = model.l2_weights(config.l2)
    tables = set(model.table_names())
    lr_dense = warmup_lr(config.lr, t - 1, config.warmup_updates)
    lr_t = bias_corrected_lr(lr_dense, t, config.adam)
    names = [name for name in params if name not in tables]
    adam = kernels.adam_dense_weights if kernels is not None else adam_dense_weights_reference
    adam(params, grads, state, names, [l2_weights.get(name, 0.0) for name in names], lr_t, config.adam)
    return lr_dense


def update_tables(model, params: dict, grads: dict, state: AdamState, config: StepConfig, kernels, t: int,
                  audit: bool = False, clip=cowclip, constants=clip_constants) -> dict:
    """Step 3: per table, L2 (before or after the clip), CowClip, Adam (update number t). -> audit info."""
    info = {}
    l2_weights = model.l2_weights(config.l2)
    lr_t = bias_corrected_lr(config.lr_embed, t, config.adam)
    a = config.adam
    ratio, floor = constants(config.clip_form, config.clip, config.bound, model.config.embed_dim)
    for name in model.table_names():
        table, grad = params[name], grads[name]
        lam = l2_weights.get(name, 0.0)
        clipped = config.clip > 0 and name in model.clipped_tables()
        l2_after_clip = clipped and config.clip_form == "paper"
        if lam and not l2_after_clip:
            grad.rows[...] += 2.0 * lam * table[grad.ids]
        if clipped:
            scales = clip(grad, table, kernels, ratio, floor)
            if audit:
                info[f"audit.{name}"] = clip_audit(grad, table, scales, model.offsets,
                                                   model.schema.sparse_names, kernels.to_host)
        if lam and l2_after_clip:
            grad.rows[...] += 2.0 * lam * table[grad.ids]
        if config.embed_optim == "lazy":
            kernels.adam_rows(table, state.m[name], state.v[name], grad.ids, grad.rows,
                              lr_t, a.beta1, a.beta2, a.epsilon)
        else:
            absent_ratio = ratio if clipped and config.clip_form == "reference" else NO_CLIP
            kernels.adam_table(table, state.m[name], state.v[name], grad.ids, grad.rows, lam,
                               absent_ratio, floor, lr_t, a.beta1, a.beta2, a.epsilon)
    return info


def train_step(model, params: dict, state: AdamState, batch, config: StepConfig, kernels,
               audit: bool = False, rng=None, **clip_hooks) -> dict:
    """Steps 1-3 on one batch. -> info with the batch's mean loss."""
    loss, grads = model.loss(params, batch, kernels, training=True, rng=rng)
    info = apply_gradients(model, params, grads, state, config, kernels, audit, **clip_hooks)
    info["loss"] = loss
    return info
