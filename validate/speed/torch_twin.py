"""A lean PyTorch twin of LR, FM, WDL and DeepFM (the bench's `--vs torch`), and the first-step
parity check of ours against it (`--parity`), on the problem of validate/speed/problem.py.

Symbols: B batch, F sparse fields, K embedding dim, V table rows, U unique ids in a batch.
PyTorch is optional (pip install torch); nothing here imports it until a twin is built.
"""
from __future__ import annotations

import math

import numpy as np

from validate.errors import normwise_rel_error
from validate.speed.problem import MODES, make_batch, make_model, make_params, step_config

TORCH_MODELS = ("lr", "fm", "wdl", "deepfm")   # the ones with a lean torch twin


def torch_unavailable_reason() -> str | None:
    try:
        import torch  # noqa: F401
    except ImportError:
        return "PyTorch is not installed (optional: pip install torch==2.13.0, a CPU build)"
    return None


def torch_twin(model, params: dict, mode: str, share_memory: bool, device: str = "cpu"):
    """A lean PyTorch version of `model` (LR, FM, WDL or DeepFM) holding `params`, and its step.

    One embedding table with per-field offsets, as ours. `dense` mode: the tables' gradients
    are dense [V, K] (F.embedding(sparse=False)) and torch.optim.Adam (fused when available)
    updates every row; `lazy` mode: sparse gradients and torch.optim.SparseAdam, which updates
    only the batch's rows. L2 (2 lambda w) and CowClip (reference form, rows of the batch) are
    applied to the tables' gradients between backward and the optimizer, as engine/step.py does.
    Adam's epsilon: SparseAdam adds it outside the bias correction, as Keras does; torch.optim.Adam
    adds it inside (sqrt(v_hat) + eps), so the dense variant differs from ours in that term.
    The absent rows' clip of the reference form (dense mode) is left out: with r = 1 and lambda =
    1e-5 it never binds (||2 lambda w|| < r ||w||).
    -> (net, step(batch) -> loss, grads_of(batch) -> (loss, {name: grad}))."""
    import torch
    import torch.nn.functional as tf

    if model.name not in TORCH_MODELS:
        raise ValueError(f"no torch twin for {model.name}")
    sparse_grads = mode == "lazy"
    as_tensor = torch.from_numpy if share_memory else (lambda a: torch.from_numpy(a.copy()))
    config = step_config(mode)
    from engine.cowclip import clip_constants

    ratio, floor = clip_constants(config.clip_form, config.clip, config.bound, model.config.embed_dim)
    lam = config.l2

    class Lean(torch.nn.Module):
        def __init__(self):
            super().__init__()
            P = torch.nn.Parameter
            self.linear_table = P(as_tensor(params["linear.table"]))
            self.dense_w = P(as_tensor(params["linear.dense_w"]))
            self.bias = P(as_tensor(params["bias"]))
            self.embed_table = P(as_tensor(params["embed.table"])) if model.uses_embedding else None
            self.dnn = torch.nn.ModuleList()
            self.head = None
            if model.name in ("wdl", "deepfm"):
                for i in range(len(model.config.dnn_hidden)):
                    W = params[f"dnn.{i}.W"]                                       # (I, H)
                    layer = torch.nn.Linear(*W.shape)
                    with torch.no_grad():
                        layer.weight.copy_(torch.from_numpy(W.T.copy()))
                        layer.bias.copy_(torch.from_numpy(params[f"dnn.{i}.b"]))
                    self.dnn.append(layer)
                self.head = torch.nn.Linear(params["head.W"].shape[0], 1, bias=False)
                with torch.no_grad():
                    self.head.weight.copy_(torch.from_numpy(params["head.W"].T.copy()))
            self.register_buffer("offsets", torch.from_numpy(model.offsets))

        def forward(self, sparse, features):
            ids = sparse.long() + self.offsets                                       # (B, F)
            wide = tf.embedding(ids, self.linear_table, sparse=sparse_grads)        # (B, F, 1)
            logit = wide.sum(dim=(1, 2)) + features @ self.dense_w + self.bias
            if self.embed_table is not None:
                emb = tf.embedding(ids, self.embed_table, sparse=sparse_grads)      # (B, F, K)
                if model.name in ("fm", "deepfm"):
                    field_sum = emb.sum(dim=1)
                    logit = logit + 0.5 * (field_sum * field_sum - (emb * emb).sum(dim=1)).sum(dim=1)
                if self.head is not None:
                    x = torch.cat([emb.flatten(1), features], dim=1)                   # (B, d)
                    for layer in self.dnn:
                        x = torch.relu(layer(x))
                    logit = logit + self.head(x)[:, 0]
            return logit, ids

    net = Lean().to(device)
    tables = [net.linear_table] + ([net.embed_table] if net.embed_table is not None else [])
    others = [p for p in net.parameters() if all(p is not t for t in tables)]
    try:
        weight_opt = torch.optim.Adam(others, lr=config.lr, eps=config.adam.epsilon, fused=True)
    except (RuntimeError, TypeError):
        weight_opt = torch.optim.Adam(others, lr=config.lr, eps=config.adam.epsilon)
    if sparse_grads:
        table_opt = torch.optim.SparseAdam(tables, lr=config.lr_embed, eps=config.adam.epsilon)
    else:
        try:
            table_opt = torch.optim.Adam(tables, lr=config.lr_embed, eps=config.adam.epsilon, fused=True)
        except (RuntimeError, TypeError):
            table_opt = torch.optim.Adam(tables, lr=config.lr_embed, eps=config.adam.epsilon)

    def forward_backward(batch):
        sparse, features, label = (x if torch.is_tensor(x) else torch.from_numpy(x).to(device) for x in batch)
        for p in net.parameters():
            p.grad = None
        logit, ids = net(sparse, features)
        loss = tf.binary_cross_entropy_with_logits(logit, label)
        loss.backward()
        return loss, ids

    @torch.no_grad()
    def regularise_and_clip(ids):
        """L2 and CowClip on the tables' gradients, in place. -> {name: (rows_ids, rows)}."""
        unique, counts = torch.unique(ids.reshape(-1), return_counts=True)       # (U,) sorted
        out = {}
        for name, table in (("linear.table", net.linear_table), ("embed.table", net.embed_table)):
            if table is None:
                continue
            if sparse_grads:
                g = table.grad.coalesce()                                         # indices sorted
                rows = g._values()                                                # (U, C), a view
                rows += 2.0 * lam * table[unique]
            else:
                table.grad.add_(table, alpha=2.0 * lam)                           # every row
                rows = table.grad[unique]                                         # (U, C)
            if name == "embed.table":
                weight_norm = table[unique].double().norm(dim=1)
                grad_norm = rows.double().norm(dim=1)
                threshold = counts * torch.clamp(ratio * weight_norm, min=floor)
                scale = torch.where(grad_norm > threshold, threshold / grad_norm, torch.ones_like(grad_norm))
                rows *= scale[:, None].to(rows.dtype)
            if sparse_grads:
                table.grad = g
            else:
                table.grad[unique] = rows
            out[name] = (unique, rows)
        net.dense_w.grad.add_(net.dense_w, alpha=2.0 * lam)
        return out

    def step(batch) -> float:
        loss, ids = forward_backward(batch)
        regularise_and_clip(ids)
        weight_opt.step()
        table_opt.step()
        return float(loss.detach())

    def grads_of(batch):
        """First-step loss and raw gradients, in our names: tables as (ids, rows) of the batch."""
        loss, ids = forward_backward(batch)
        unique = torch.unique(ids.reshape(-1))
        grads = {"bias": net.bias.grad, "linear.dense_w": net.dense_w.grad}
        for name, table in (("linear.table", net.linear_table), ("embed.table", net.embed_table)):
            if table is not None:
                g = table.grad.to_dense() if table.grad.is_sparse else table.grad
                grads[name] = (unique, g[unique], float(g.abs().sum() - g[unique].abs().sum()))
        for i, layer in enumerate(net.dnn):
            grads[f"dnn.{i}.W"], grads[f"dnn.{i}.b"] = layer.weight.grad.T, layer.bias.grad
        if net.head is not None:
            grads["head.W"] = net.head.weight.grad.T
        clipped = regularise_and_clip(ids)
        return float(loss), {k: (tuple(x.numpy() if hasattr(x, "numpy") else x for x in v)
                                 if isinstance(v, tuple) else v.numpy()) for k, v in grads.items()}, \
            {k: (u.numpy(), r.numpy()) for k, (u, r) in clipped.items()}

    return net, step, grads_of


# --------------------------------------------------------------------------------------------
# parity: the first step of ours and of the twin


def parity(model_name: str, vocab: int, batch_size: int, tolerance: float = 1e-4) -> list[tuple]:
    """First step of ours and the torch twin from the same params and batch: the loss, every raw
    gradient (tables on the batch's rows; torch's table gradient must be 0 on every other row),
    and the tables' gradient rows after L2 and CowClip. -> rows (mode, what, rel error, ok)."""
    from engine.backend import get_backend
    from engine.cowclip import clip_constants, cowclip
    from engine.layers.embedding import RowGrad

    model = make_model(model_name, vocab)
    batch = make_batch(model, batch_size, 0)
    kernels = get_backend("cpu")
    rows = []
    for mode in MODES:
        params = make_params(model)
        loss, grads = model.loss(params, batch, kernels)
        _, _, grads_of = torch_twin(model, params, mode, share_memory=False)
        t_loss, t_grads, t_clipped = grads_of(batch)
        rows.append((mode, "loss", abs(loss - t_loss) / abs(t_loss)))
        config = step_config(mode)
        ratio, floor = clip_constants(config.clip_form, config.clip, config.bound, model.config.embed_dim)
        for name, g in grads.items():
            if hasattr(g, "rows"):
                order = np.argsort(g.ids)                                 # torch's ids are sorted
                t_ids, t_rows, elsewhere = t_grads[name]
                same_ids = np.array_equal(g.ids[order], t_ids)
                rows.append((mode, f"{name} rows (U={len(t_ids)})",
                             normwise_rel_error(g.rows[order], t_rows) if same_ids else math.inf))
                rows.append((mode, f"{name} other rows, torch sum |g|", elsewhere))
                # after L2 and CowClip, as apply_gradients does them (reference form)
                after = g.rows + 2.0 * config.l2 * params[name][g.ids]
                if name in model.clipped_tables():
                    cowclip(RowGrad(g.ids, after, g.counts), params[name], kernels, ratio, floor)
                rows.append((mode, f"{name} rows after L2+CowClip",
                             normwise_rel_error(after[order], t_clipped[name][1])))
            else:
                rows.append((mode, name, normwise_rel_error(g, t_grads[name].reshape(g.shape))))
    return [(mode, what, err, err <= tolerance) for mode, what, err in rows]
