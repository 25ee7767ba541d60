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

from engine.cowclip import COWCLIP, ClipRule, check_form, clip_audit, clip_rows, clips_absent_rows, l2_before_clip
from engine.optim import (EMBED_MODES, AdamConfig, AdamState, adam_dense_update, bias_corrected_lr,
                          warmup_lr)


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
    rule: ClipRule = COWCLIP         # CowClip or one of its ablations (see engine/cowclip.py)

    def __post_init__(self):
        if self.embed_optim not in EMBED_MODES:
            raise ValueError(f"embed_optim must be one of {EMBED_MODES}, got {self.embed_optim!r}")
        check_form(self.clip_form)


def apply_gradients(model, params: dict, grads: dict, state: AdamState, config: StepConfig, kernels,
                    audit: bool = False) -> dict:
    """Steps 2 and 3 above, in place on params and state. -> info (lr used, audit if asked)."""
    t = state.updates + 1
    info = {"lr": update_dense_weights(model, params, grads, state, config, t)}
    info.update(update_tables(model, params, grads, state, config, kernels, t, audit))
    state.updates = t
    return info


def update_dense_weights(model, params: dict, grads: dict, state: AdamState, config: StepConfig, t: int) -> float:
    """Step 2: L2 term and Adam (update number t) on every parameter but the tables. -> the dense lr."""
    l2_weights = model.l2_weights(config.l2)
    tables = set(model.table_names())
    lr_dense = warmup_lr(config.lr, t - 1, config.warmup_updates)
    lr_t = bias_corrected_lr(lr_dense, t, config.adam)
    for name, w in params.items():
        if name in tables:
            continue
        g = grads[name]
        lam = l2_weights.get(name, 0.0)
        if lam:
            g = g + 2.0 * lam * w
        adam_dense_update(w, g, state.m[name], state.v[name], lr_t, config.adam)
    return lr_dense


def update_tables(model, params: dict, grads: dict, state: AdamState, config: StepConfig, kernels, t: int,
                  audit: bool = False) -> dict:
    """Step 3: per table, L2 (before or after the clip), CowClip, Adam (update number t). -> audit info."""
    info = {}
    l2_weights = model.l2_weights(config.l2)
    lr_t = bias_corrected_lr(config.lr_embed, t, config.adam)
    a = config.adam
    ratio, floor = config.rule.constants(config.clip_form, config.clip, config.bound, model.config.embed_dim)
    for name in model.table_names():
        table, grad = params[name], grads[name]
        lam = l2_weights.get(name, 0.0)
        clipped = config.clip > 0 and name in model.clipped_tables()
        l2_after_clip = clipped and not l2_before_clip(config.clip_form)
        if lam and not l2_after_clip:
            grad.rows[...] += 2.0 * lam * table[grad.ids]
        if clipped:
            scales = clip_rows(config.rule, grad, table, model.offsets, kernels, ratio, floor)
            if audit:
                info[f"audit.{name}"] = clip_audit(grad, table, scales, model.offsets,
                                                   model.schema.sparse_names, kernels.to_host)
        if lam and l2_after_clip:
            grad.rows[...] += 2.0 * lam * table[grad.ids]
        if config.embed_optim == "lazy":
            kernels.adam_rows(table, state.m[name], state.v[name], grad.ids, grad.rows,
                              lr_t, a.beta1, a.beta2, a.epsilon)
        else:
            clip_absent = clipped and clips_absent_rows(config.clip_form)
            kernels.adam_table(table, state.m[name], state.v[name], grad.ids, grad.rows, lam,
                               clip_absent, ratio, floor, lr_t, a.beta1, a.beta2, a.epsilon)
    return info


def train_step(model, params: dict, state: AdamState, batch, config: StepConfig, kernels,
               audit: bool = False, rng=None) -> dict:
    """Steps 1-3 on one batch. -> info with the batch's mean loss."""
    loss, grads = model.loss(params, batch, kernels, training=True, rng=rng)
    info = apply_gradients(model, params, grads, state, config, kernels, audit)
    info["loss"] = loss
    return info
