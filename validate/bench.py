"""Benchmark of the CPU training step at Criteo scale, with a per-phase breakdown and a PyTorch twin.

    python -m validate.bench                              # DeepFM, both vocabularies, both table modes
    python -m validate.bench --models all --steps 3 --warmup 1
    python -m validate.bench --vocab small --vs torch --parity
    python -m validate.bench --vocab small --curve        # samples/s against batch size 1K..128K

Symbols: B batch, F = 26 sparse fields, D = 13 dense features, K = 10 embedding dim, V table rows,
H = 400 hidden width, U unique ids in a batch.

The problem. Field sizes are Criteo Kaggle's 26 vocabularies (V = 33,762,577 in all, `criteo`) or
the same shape at 1/100 (V = 337,630, `small`). Ids of field f are Zipf(1.2) ranks, wrapped into
[0, V_f) and scattered over the field's rows by a multiplicative hash (rank * p mod V_f, p prime),
so frequent ids do not sit next to each other in the table. Dense features are uniform in [0, 1).
Step: StepConfig(l2 1e-5, CowClip r = 1 in the reference form, bound 1e-5), tables in `dense`
mode (every row moves each step) or `lazy` mode (only the batch's rows).

What is printed (medians over --steps steps after --warmup steps; nothing asserts on time):
  * the whole step (engine.step.train_step), and each phase, timed by calling the layer and kernel
    functions directly in the order model.loss and apply_gradients call them (phase_step below);
  * DNN GEMM GFLOP/s, against a float32 GEMM peak measured here with np.matmul, and the floor
    step >= DNN fwd+bwd FLOPs / peak;
  * peak resident memory of each configuration: every configuration runs in a child process of
    its own and reports its ru_maxrss;
  * with --vs torch, the same step in a lean PyTorch model (torch_twin below), same init, same
    batches, and the ratio of our time to torch's; with --parity, the first step's loss and
    gradients of both, compared.

Timings are wall clock on whatever else the machine runs: run it on an idle machine.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import namedtuple
from contextlib import contextmanager

import click
import numba
import numpy as np

from engine.kernels.adam import update_table_row

Batch = namedtuple("Batch", "sparse dense label")

CRITEO_VOCAB = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
                27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572)
VOCABS = {"small": 337_630, "criteo": 33_762_577}
ZIPF_EXPONENT = 1.2
HASH_PRIME = 1_000_000_007          # > every V_f, so rank -> rank * p mod V_f is a bijection
NUM_DENSE, EMBED_DIM, HIDDEN = 13, 10, (400, 400, 400)
ALL_MODELS = ("lr", "fm", "wdl", "deepfm", "dcn", "dcnv2", "dcnmix")
TORCH_MODELS = ("lr", "fm", "wdl", "deepfm")   # the ones with a lean torch twin
MODES = ("dense", "lazy")
GOAL_TORCH_RATIO, GOAL_FLOOR_RATIO = 0.5, 1.3


# --------------------------------------------------------------------------------------------
# the problem: schema, params, batches, step config


def vocab_sizes(total: int) -> tuple:
    """(F,) field sizes summing to `total`: Criteo's, scaled by total / 33,762,577."""
    if total == sum(CRITEO_VOCAB):
        return CRITEO_VOCAB
    sizes = np.maximum(np.round(np.array(CRITEO_VOCAB) * total / sum(CRITEO_VOCAB)), 1).astype(np.int64)
    sizes[np.argmax(sizes)] += total - sizes.sum()   # put the rounding on the largest field
    return tuple(int(v) for v in sizes)


def make_model(name: str, total_vocab: int):
    from models import ModelConfig, Schema, build_model

    return build_model(name, Schema(vocab_sizes(total_vocab), NUM_DENSE),
                       ModelConfig(embed_dim=EMBED_DIM, dnn_hidden=HIDDEN))


def make_params(model, seed: int = 0) -> dict:
    """model.init_params, but the [V, K] tables drawn in float32 straight away: at V = 33.8M the
    float64 draw of init_params would be 2.7 GB and would dominate the peak memory we report."""
    from models import ModelConfig, Schema, build_model

    tiny = build_model(model.name, Schema((1,) * model.schema.num_fields, model.schema.num_dense),
                       model.config)
    params = {k: v for k, v in tiny.init_params(seed).items() if not k.endswith(".table")}
    rng = np.random.default_rng(seed)
    V = model.schema.total_rows
    params["linear.table"] = np.zeros((V, 1), dtype=np.float32)
    if model.uses_embedding:
        table = rng.standard_normal((V, model.config.embed_dim), dtype=np.float32)
        table *= np.float32(model.config.init_stddev)
        params["embed.table"] = table
    return params


def make_batch(model, batch_size: int, seed: int) -> Batch:
    rng = np.random.default_rng([seed, 7])
    sizes = np.asarray(model.schema.vocab_sizes, dtype=np.int64)
    rank = rng.zipf(ZIPF_EXPONENT, (batch_size, sizes.size)) - 1           # (B, F), 0 = most frequent
    sparse = ((rank % sizes) * HASH_PRIME % sizes).astype(np.int32)        # (B, F)
    dense = rng.random((batch_size, model.schema.num_dense), dtype=np.float32)
    label = (rng.random(batch_size) < 0.25).astype(np.float32)
    return Batch(sparse, dense, label)


def step_config(mode: str):
    from engine.step import StepConfig

    return StepConfig(lr=8e-4, lr_embed=1e-4, l2=1e-5, clip=1.0, bound=1e-5, clip_form="reference",
                      embed_optim=mode)


def dnn_flops(model, batch_size: int) -> float:
    """FLOPs of the DNN's GEMMs in one step: forward 2*B*I*H per Dense, backward twice that (dx
    and dW). The head Dense(1) is counted; cross layers are not."""
    if model.name not in ("deepfm", "wdl", "dcn", "dcnv2", "dcnmix"):
        return 0.0
    widths = (model.input_width,) + tuple(model.config.dnn_hidden) + (1,)
    return 6.0 * batch_size * sum(i * h for i, h in zip(widths[:-1], widths[1:]))


def gemm_peak_gflops(n: int = 3072, repeats: int = 4) -> float:
    """float32 GEMM GFLOP/s of np.matmul on (n, n) matrices, best of `repeats`."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


# --------------------------------------------------------------------------------------------
# the step, phase by phase (mirrors CTRModel.loss and engine.step.apply_gradients)


class Timers:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        yield
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0


PHASES = ("gather", "fm", "dnn_fwd", "dnn_bwd", "scatter", "cowclip", "adam_dense", "adam_tables", "other")


def phase_step(model, params, state, batch, config, kernels) -> tuple[float, dict]:
    """One training step, the same calls as train_step, with a timer around each phase.
    -> (loss, {phase: seconds}). 'dnn_*' is the whole body for the models other than DeepFM and
    WDL (the cross network included); 'other' is the linear part, the loss and bookkeeping;
    'adam_tables' includes the tables' L2 terms."""
    from dataclasses import replace

    from engine.layers.embedding import embedding_backward, embedding_forward, index_batch_ids
    from engine.layers.fm import fm_backward, fm_forward
    from engine.layers.linear import linear_backward, linear_forward
    from engine.layers.loss import bce_with_logits_backward, bce_with_logits_forward
    from engine.step import update_dense_weights, update_tables
    from models.parts import dnn_backward, dnn_forward, head_backward, head_forward

    timer = Timers()
    split_body = model.name in ("deepfm", "wdl")
    with timer("gather"):
        ids = model.global_ids(batch.sparse)                                      # (B, F)
        wide, _ = embedding_forward(params["linear.table"], ids)                  # (B, F, 1)
        emb = embedding_forward(params["embed.table"], ids)[0] if model.uses_embedding else None
    with timer("other"):
        linear_logit, linear_cache = linear_forward(wide, batch.dense, params["linear.dense_w"])
    logits = linear_logit + params["bias"][0]
    if model.name in ("fm", "deepfm"):
        with timer("fm"):
            fm_logit, fm_cache = fm_forward(emb)                                  # (B,)
        logits = logits + fm_logit
    if split_body:
        with timer("dnn_fwd"):
            x0 = model.deep_input(emb, batch.dense)                               # (B, d)
            h, dnn_cache = dnn_forward(params, x0, len(model.config.dnn_hidden), 0.0, True, None)
            dnn_logit, head_cache = head_forward(params, h)                       # (B,)
        logits = logits + dnn_logit
    elif model.name != "fm":
        with timer("dnn_fwd"):
            body_logit, body_cache = model.body_forward(params, emb, batch.dense, True, None)
        if body_logit is not None:
            logits = logits + body_logit
    with timer("other"):
        loss, loss_cache = bce_with_logits_forward(logits, batch.label)
        dlogits = bce_with_logits_backward(loss_cache)                            # (B,)

    grads = {}
    if split_body:
        with timer("dnn_bwd"):
            dh = head_backward(dlogits, head_cache, grads)
            dx0 = dnn_backward(dh, dnn_cache, grads)
            demb = model.split_deep_input_grad(dx0)                               # (B, F, K)
    elif model.name != "fm":
        with timer("dnn_bwd"):
            body_grads = model.body_backward(dlogits, body_cache)
            demb = body_grads.pop("emb", None)
            grads.update(body_grads)
    if model.name in ("fm", "deepfm"):
        with timer("fm"):
            demb = fm_backward(dlogits, fm_cache, add=demb if model.name == "deepfm" else None)
    with timer("other"):
        dwide, _, grads["linear.dense_w"] = linear_backward(dlogits, linear_cache)
        grads["bias"] = dlogits.sum(keepdims=True)
    with timer("scatter"):
        index = index_batch_ids(ids, model.schema.total_rows, kernels)
        grads["linear.table"] = embedding_backward(dwide, index, kernels)
        if model.uses_embedding:
            grads["embed.table"] = embedding_backward(demb, index, kernels)

    # apply_gradients, its two phases timed apart, and CowClip timed inside the table phase
    t = state.updates + 1
    with timer("adam_dense"):
        update_dense_weights(model, params, grads, state, config, t)

    def timed_cowclip(*args):
        with timer("cowclip"):
            return kernels.cowclip_rows(*args)

    with timer("adam_tables"):
        update_tables(model, params, grads, state, config, replace(kernels, cowclip_rows=timed_cowclip), t)
    timer.seconds["adam_tables"] -= timer.seconds.get("cowclip", 0.0)   # L2 and Adam on the tables
    state.updates = t
    return loss, timer.seconds


# --------------------------------------------------------------------------------------------
# the lean PyTorch twin


def torch_unavailable_reason() -> str | None:
    try:
        import torch  # noqa: F401
    except ImportError:
        return "PyTorch is not installed (optional: pip install torch==2.13.0, a CPU build)"
    return None


def torch_twin(model, params: dict, mode: str, share_memory: bool):
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

        def forward(self, sparse, dense):
            ids = sparse.long() + self.offsets                                       # (B, F)
            wide = tf.embedding(ids, self.linear_table, sparse=sparse_grads)        # (B, F, 1)
            logit = wide.sum(dim=(1, 2)) + dense @ self.dense_w + self.bias
            if self.embed_table is not None:
                emb = tf.embedding(ids, self.embed_table, sparse=sparse_grads)      # (B, F, K)
                if model.name in ("fm", "deepfm"):
                    field_sum = emb.sum(dim=1)
                    logit = logit + 0.5 * (field_sum * field_sum - (emb * emb).sum(dim=1)).sum(dim=1)
                if self.head is not None:
                    x = torch.cat([emb.flatten(1), dense], dim=1)                   # (B, d)
                    for layer in self.dnn:
                        x = torch.relu(layer(x))
                    logit = logit + self.head(x)[:, 0]
            return logit, ids

    net = Lean()
    tables = [net.linear_table] + ([net.embed_table] if net.embed_table is not None else [])
    others = [p for p in net.parameters() if all(p is not t for t in tables)]
    try:
        dense_opt = torch.optim.Adam(others, lr=config.lr, eps=config.adam.epsilon, fused=True)
    except (RuntimeError, TypeError):
        dense_opt = torch.optim.Adam(others, lr=config.lr, eps=config.adam.epsilon)
    if sparse_grads:
        table_opt = torch.optim.SparseAdam(tables, lr=config.lr_embed, eps=config.adam.epsilon)
    else:
        try:
            table_opt = torch.optim.Adam(tables, lr=config.lr_embed, eps=config.adam.epsilon, fused=True)
        except (RuntimeError, TypeError):
            table_opt = torch.optim.Adam(tables, lr=config.lr_embed, eps=config.adam.epsilon)

    def forward_backward(batch):
        sparse, dense, label = (torch.from_numpy(x) for x in batch)
        for p in net.parameters():
            p.grad = None
        logit, ids = net(sparse, dense)
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
        dense_opt.step()
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
# one configuration, in a child process of its own (so ru_maxrss is its own peak)


def _median(xs):
    return statistics.median(xs) if xs else float("nan")


def run_config(spec: dict) -> dict:
    """spec: engine ('ours' | 'torch'), model, vocab, mode, batch, steps, warmup, breakdown,
    batches (list of batch sizes for the curve, else None). -> timings and ru_maxrss (bytes)."""
    from engine.backend import get_backend
    from engine.optim import AdamState

    model = make_model(spec["model"], spec["vocab"])
    params = make_params(model)
    batch_sizes = spec.get("batches") or [spec["batch"]]
    out = {"spec": spec, "step_s": {}, "phases": {}}
    if spec["engine"] == "torch":
        import torch

        torch.manual_seed(0)
        _, step, _ = torch_twin(model, params, spec["mode"], share_memory=True)
    else:
        kernels = get_backend("cpu")
        state = AdamState.zeros_like(params, np)
        config = step_config(spec["mode"])
        from engine.step import train_step

        step = lambda b: train_step(model, params, state, b, config, kernels)["loss"]   # noqa: E731
    for B in batch_sizes:
        batches = [make_batch(model, B, seed) for seed in range(2)]
        times = []
        for i in range(spec["warmup"] + spec["steps"]):
            t0 = time.perf_counter()
            loss = step(batches[i % 2])
            if i >= spec["warmup"]:
                times.append(time.perf_counter() - t0)
        out["step_s"][B] = _median(times)
        out["loss"] = float(loss)
    if spec["engine"] == "ours" and spec.get("breakdown"):
        B = batch_sizes[-1]
        batches = [make_batch(model, B, seed) for seed in range(2)]
        per_phase = {p: [] for p in PHASES}
        totals = []
        for i in range(max(1, spec["steps"])):
            t0 = time.perf_counter()
            _, seconds = phase_step(model, params, state, batches[i % 2], config, kernels)
            totals.append(time.perf_counter() - t0)
            for p in PHASES:
                per_phase[p].append(seconds.get(p, 0.0))
        out["phases"] = {p: _median(v) for p, v in per_phase.items()}
        out["phase_step_s"] = _median(totals)
    out["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # KiB on Linux
    return out


def _child_main(spec, queue):
    from engine.runtime import configure_process

    # both engines get the same settings, as under engine.train (--malloc default: glibc's own)
    configure_process(retain_memory=spec.get("malloc", "retain") == "retain")
    try:
        queue.put(run_config(spec))
    except BaseException as error:  # reported by the parent
        queue.put({"error": f"{type(error).__name__}: {error}"})


def run_in_child(spec: dict) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_main, args=(spec, queue))
    child.start()
    result = queue.get()
    child.join()
    if "error" in result:
        raise RuntimeError(f"{spec}: {result['error']}")
    return result


def data_seconds_per_batch(batch_size: int, batches: int = 4) -> float:
    """Median time for BatchReader (in-memory, shuffled, no prefetch thread) to assemble one
    batch of a synthetic dataset of 4 batches' rows, written to a temporary folder."""
    from dataio.reader import BatchReader
    from dataio.synthetic import generate

    with tempfile.TemporaryDirectory() as tmp:
        path = generate(os.path.join(tmp, "data"), rows=int(batch_size * batches / 0.9) + 1, seed=0)
        reader = BatchReader(path, "train", batch_size, shuffle=True, seed=0, prefetch=0, drop_last=True)
        for _ in reader.iter_epoch(0):                    # loads the shards
            pass
        times = []
        for epoch in (1, 2):
            it = iter(reader.iter_epoch(epoch))
            while True:
                t0 = time.perf_counter()
                if next(it, None) is None:
                    break
                times.append(time.perf_counter() - t0)
    return _median(times)


# --------------------------------------------------------------------------------------------
# before / after: each optimised piece against its plain form (the test oracle), interleaved in
# one process so that a busy machine slows both alike


@numba.njit(parallel=True, cache=True)
def _table_adam_float64_math(table, m, v, position, row_grads, l2, clip_absent, absent_ratio, absent_floor,
                             lr_t, beta1, beta2, eps):
    """The dense table Adam before it computed in the table's dtype: update_table_row (float64
    arithmetic, the form the CUDA kernel still runs) on every row, two threads."""
    for r in numba.prange(table.shape[0]):
        update_table_row(table, m, v, r, position[r], row_grads, l2, clip_absent, absent_ratio, absent_floor,
                         lr_t, beta1, beta2, eps)


def ab_compare(batch_size: int, vocab: int, rounds: int = 3) -> list[tuple]:
    """-> rows (piece, plain seconds, optimised seconds), medians over `rounds` alternations."""
    from engine.backend import get_backend
    from engine.kernels import adam
    from engine.kernels.dense import outer_cpu
    from engine.layers.embedding import embedding_forward
    from engine.layers.fm import fm_backward, fm_backward_plain, fm_forward, fm_forward_plain
    from engine.layers.mlp import dense_forward, mlp_backward, mlp_forward

    model = make_model("deepfm", vocab)
    params = make_params(model)
    batch = make_batch(model, batch_size, 0)
    rng = np.random.default_rng(0)
    ids = model.global_ids(batch.sparse)                                          # (B, F)
    table = params["embed.table"]                                                 # (V, K)
    emb = table[ids]                                                              # (B, F, K)
    x0 = model.deep_input(emb, batch.dense)                                       # (B, d)
    weights = [params[f"dnn.{i}.W"] for i in range(3)]
    biases = [params[f"dnn.{i}.b"] for i in range(3)]
    dh = rng.standard_normal((batch_size, HIDDEN[-1]), dtype=np.float32)
    dlogits = rng.standard_normal(batch_size, dtype=np.float32) / batch_size
    F, K = emb.shape[1], emb.shape[2]

    def plain_mlp():                      # the forms before the change: mask kept, x^T dy, dy * mask
        caches, h = [], x0
        for W, b in zip(weights, biases):
            y, _ = dense_forward(h, W, b)
            positive = y > 0
            np.maximum(y, 0, out=y)
            caches.append((h, W, positive))
            h = y
        g = dh
        for h, W, positive in reversed(caches):
            g = g * positive
            g, _, _ = g @ W.T, h.T @ g, g.sum(axis=0)
        return g

    def fast_mlp():
        h, caches = mlp_forward(x0, weights, biases)
        return mlp_backward(dh, caches)[0]

    def plain_fm():                       # NumPy forward, backward, then the DNN's demb added
        _, cache = fm_forward_plain(emb)
        return fm_backward_plain(dlogits, cache, add=x0[:, :F * K].reshape(-1, F, K))

    def fast_fm():                        # the fused kernels, the DNN's demb added in the same pass
        _, cache = fm_forward(emb)
        return fm_backward(dlogits, cache, add=x0[:, :F * K].reshape(-1, F, K))

    head_w = rng.standard_normal((HIDDEN[-1], 1), dtype=np.float32)
    index = get_backend("cpu").index_ids(ids.reshape(-1), model.schema.total_rows)
    rows = rng.standard_normal((index[0].size, K), dtype=np.float32)
    moments = [np.zeros_like(table), np.zeros_like(table)]
    table_adam = adam.TableAdam()
    adam_args = (index[0], rows, 1e-5, True, 1.0, 1e-4, 1e-4, 0.9, 0.999, 1e-7)
    position = adam.row_positions(np, table.shape[0], index[0])
    pieces = [
        ("gather table[ids] -> take", lambda: table[ids], lambda: embedding_forward(table, ids)),
        ("DNN fwd+bwd (dW layout, ReLU mask, in place)", plain_mlp, fast_mlp),
        ("FM fwd + bwd + DNN's demb (fused kernels)", plain_fm, fast_fm),
        ("head backward: dy W^T as GEMM -> outer kernel", lambda: dlogits[:, None] @ head_w.T,
         lambda: outer_cpu(dlogits, head_w[:, 0], np.empty_like(dh))),
        ("dense table Adam: [V] map kept", lambda: adam.adam_table_cpu(table, *moments, *adam_args),
         lambda: table_adam(table, *moments, *adam_args)),
        ("dense table Adam: float64 -> table-dtype math",
         lambda: _table_adam_float64_math(table, *moments, position, *adam_args[1:]),
         lambda: adam._adam_table_cpu(table, *moments, position, *adam_args[1:])),
    ]
    out = []
    for name, plain, fast in pieces:
        plain(), fast()                                                           # compile, warm
        times = ([], [])
        for _ in range(rounds):
            for i, f in enumerate((plain, fast)):
                t0 = time.perf_counter()
                f()
                times[i].append(time.perf_counter() - t0)
        out.append((name, _median(times[0]), _median(times[1])))
    return out


# --------------------------------------------------------------------------------------------
# parity with torch


def rel_error(ours, theirs) -> float:
    """max |a - b| / max |b| over the whole tensor (normwise: float32 sums of a different order
    differ elementwise by more than 1e-4 where an entry is a cancellation to near zero)."""
    a, b = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def parity(model_name: str, vocab: int, batch_size: int, tolerance: float = 1e-4) -> list[tuple]:
    """First step of ours and the torch twin from the same params and batch: the loss, every raw
    gradient (tables on the batch's rows; torch's table gradient must be 0 on every other row),
    and the tables' gradient rows after L2 and CowClip. -> rows (mode, what, rel error, ok)."""
    from engine.backend import get_backend
    from engine.cowclip import clip_constants, cowclip

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
                             rel_error(g.rows[order], t_rows) if same_ids else math.inf))
                rows.append((mode, f"{name} other rows, torch sum |g|", elsewhere))
                # after L2 and CowClip, as apply_gradients does them (reference form)
                after = g.rows + 2.0 * config.l2 * params[name][g.ids]
                if name in model.clipped_tables():
                    from engine.layers.embedding import RowGrad

                    cowclip(RowGrad(g.ids, after, g.counts), params[name], kernels, ratio, floor)
                rows.append((mode, f"{name} rows after L2+CowClip", rel_error(after[order], t_clipped[name][1])))
            else:
                rows.append((mode, name, rel_error(g, t_grads[name].reshape(g.shape))))
    return [(mode, what, err, err <= tolerance) for mode, what, err in rows]


# --------------------------------------------------------------------------------------------
# the command


def _fmt_bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


@click.command()
@click.option("--models", "models_opt", default="deepfm", show_default=True,
              help="comma-separated model names, or 'all'")
@click.option("--vocab", type=click.Choice(["small", "criteo", "both"]), default="both", show_default=True)
@click.option("--modes", default="dense,lazy", show_default=True, help="table optimizer modes")
@click.option("--batch", default=131072, show_default=True)
@click.option("--steps", default=5, show_default=True, help="timed steps per configuration (median)")
@click.option("--warmup", default=2, show_default=True, help="untimed steps first (Numba compiles)")
@click.option("--vs", "versus", type=click.Choice(["none", "torch"]), default="none", show_default=True)
@click.option("--parity", "check_parity", is_flag=True, help="compare the first step with torch's")
@click.option("--curve", is_flag=True, help="samples/s against batch size 1K..--batch (DeepFM)")
@click.option("--no-breakdown", is_flag=True, help="skip the per-phase breakdown")
@click.option("--no-data", is_flag=True, help="skip timing the reader")
@click.option("--ab", is_flag=True, help="time each optimised piece against its plain form, then stop")
@click.option("--malloc", type=click.Choice(["retain", "default"]), default="retain", show_default=True,
              help="glibc malloc in each timed child: keep freed memory (engine/memory.py, as engine.train "
                   "does) or leave glibc's defaults; torch's child gets the same")
def main(models_opt, vocab, modes, batch, steps, warmup, versus, check_parity, curve, no_breakdown, no_data, ab,
         malloc):
    models = ALL_MODELS if models_opt == "all" else tuple(m.strip().lower() for m in models_opt.split(","))
    vocabs = ("small", "criteo") if vocab == "both" else (vocab,)
    modes = tuple(m.strip() for m in modes.split(","))
    use_torch = versus == "torch" or check_parity
    if use_torch and (reason := torch_unavailable_reason()):
        print(f"torch: {reason}; running without the torch comparison")
        use_torch, check_parity = False, False
    print(f"machine: {os.cpu_count()} CPUs, numpy {np.__version__}, numba {numba.__version__} "
          f"({numba.config.NUMBA_NUM_THREADS} threads, {numba.config.THREADING_LAYER} layer in the timed children)" + (f", torch {__import__('torch').__version__} "
                                                         f"({__import__('torch').get_num_threads()} threads)"
                                                         if use_torch else ""))
    print(f"batch {batch}, steps {steps} (median) after {warmup} warm-up; Zipf({ZIPF_EXPONENT}) ids, "
          f"K={EMBED_DIM}, DNN {'-'.join(map(str, HIDDEN))}, CowClip r=1 reference form, l2 1e-5; "
          f"malloc {malloc}")
    peak = gemm_peak_gflops()
    print(f"float32 GEMM peak (np.matmul 3072^2, best of 4): {peak:.1f} GFLOP/s")

    if ab:
        for v in vocabs:
            print(f"\nbefore / after, deepfm V={VOCABS[v]:,}, batch {batch}, median of {steps} alternations:")
            for name, plain, fast in ab_compare(batch, VOCABS[v], steps):
                print(f"  {name:48s} plain {plain * 1e3:8.1f} ms  now {fast * 1e3:8.1f} ms  "
                      f"speed-up {plain / fast:5.2f}x")
        return

    if check_parity:
        print(f"\nparity, first step, ours vs torch (deepfm, V={VOCABS['small']:,}, batch {min(batch, 16384)}); "
              f"rel = max|ours - torch| / max|torch| per tensor, goal <= 1e-4")
        bad = 0
        for mode, what, err, ok in parity("deepfm", VOCABS["small"], min(batch, 16384)):
            bad += not ok
            print(f"  {mode:5s} {what:45s} {err:9.2e}  {'ok' if ok else 'FAIL'}")
        print(f"  parity: {'all within 1e-4' if not bad else f'{bad} over 1e-4'}")

    data_s = None
    if not no_data:
        data_s = data_seconds_per_batch(batch)
        print(f"\ndata: BatchReader assembles a batch of {batch} in {data_s * 1e3:.1f} ms "
              f"(in memory, shuffled, without the prefetch thread, which overlaps it with the step)")

    results = []
    for name in models:
        for v in vocabs:
            for mode in modes:
                spec = dict(engine="ours", model=name, vocab=VOCABS[v], mode=mode, batch=batch,
                            steps=steps, warmup=warmup, breakdown=not no_breakdown, malloc=malloc)
                ours = run_in_child(spec)
                theirs = None
                if use_torch and name in TORCH_MODELS:
                    theirs = run_in_child(dict(spec, engine="torch", breakdown=False))
                results.append((name, v, mode, ours, theirs))
                _print_config(name, v, mode, batch, ours, theirs, peak, data_s)

    print("\nsummary (batch %d; ratio = our step / torch step, goal <= %.1f; floor goal <= %.1f at small)"
          % (batch, GOAL_TORCH_RATIO, GOAL_FLOOR_RATIO))
    print(f"  {'model':7s} {'vocab':7s} {'mode':5s} {'ours s':>8s} {'samples/s':>10s} {'torch s':>8s} "
          f"{'ratio':>6s} {'x floor':>7s} {'ours RSS':>10s} {'torch RSS':>10s}")
    for name, v, mode, ours, theirs in results:
        s = ours["step_s"][batch]
        floor_s = dnn_flops(make_model(name, VOCABS["small"]), batch) / (peak * 1e9)
        t = theirs["step_s"][batch] if theirs else float("nan")
        print(f"  {name:7s} {v:7s} {mode:5s} {s:8.3f} {batch / s:10.0f} {t:8.3f} {s / t:6.2f} "
              f"{(s / floor_s if floor_s else float('nan')):7.2f} {_fmt_bytes(ours['maxrss']):>10s} "
              f"{(_fmt_bytes(theirs['maxrss']) if theirs else '-'):>10s}")

    if curve:
        sizes = [b for b in (1 << k for k in range(10, 18)) if b <= batch]
        spec = dict(engine="ours", model="deepfm", vocab=VOCABS[vocabs[0]], mode=modes[0], batch=batch,
                    steps=steps, warmup=warmup, batches=sizes, malloc=malloc)
        ours = run_in_child(spec)
        theirs = run_in_child(dict(spec, engine="torch")) if use_torch else None
        print(f"\nsamples/s against batch size (deepfm, V={VOCABS[vocabs[0]]:,}, {modes[0]} tables)")
        print(f"  {'batch':>7s} {'ours':>10s}" + (f" {'torch':>10s} {'ratio':>6s}" if theirs else ""))
        for B in sizes:
            line = f"  {B:7d} {B / ours['step_s'][B]:10.0f}"
            if theirs:
                line += f" {B / theirs['step_s'][B]:10.0f} {ours['step_s'][B] / theirs['step_s'][B]:6.2f}"
            print(line)


def _print_config(name, v, mode, batch, ours, theirs, peak, data_s):
    s = ours["step_s"][batch]
    print(f"\n{name} V={VOCABS[v]:,} ({v}) {mode} tables: step {s:.3f} s = {batch / s:,.0f} samples/s, "
          f"peak RSS {_fmt_bytes(ours['maxrss'])}")
    if theirs:
        t = theirs["step_s"][batch]
        print(f"  torch: step {t:.3f} s, peak RSS {_fmt_bytes(theirs['maxrss'])}; ours / torch = {s / t:.2f} "
              f"(goal <= {GOAL_TORCH_RATIO}) {'met' if s / t <= GOAL_TORCH_RATIO else 'NOT met'}; "
              f"RSS {'<=' if ours['maxrss'] <= theirs['maxrss'] else '>'} torch's")
    if ours["phases"]:
        phases = ours["phases"]
        total = ours["phase_step_s"]
        print(f"  phases (median of {len(ours['spec']) and ours['spec']['steps']} timed steps; sum "
              f"{sum(phases.values()):.3f} s, timed step {total:.3f} s):")
        for p in PHASES:
            print(f"    {p:12s} {phases[p] * 1e3:9.1f} ms  {100 * phases[p] / total:5.1f} %")
        if data_s is not None:
            print(f"    {'data':12s} {data_s * 1e3:9.1f} ms  (reader, not part of the step)")
        flops = dnn_flops(make_model(name, VOCABS["small"]), batch)
        if flops:
            gemm_s = phases["dnn_fwd"] + phases["dnn_bwd"]
            floor_s = flops / (peak * 1e9)
            print(f"  DNN: {flops / 1e9:.0f} GFLOP per step, {flops / gemm_s / 1e9:.1f} GFLOP/s in the DNN phases "
                  f"({100 * flops / gemm_s / 1e9 / peak:.0f} % of peak); floor {floor_s:.3f} s, "
                  f"step = {s / floor_s:.2f} x floor (goal <= {GOAL_FLOOR_RATIO} at V=337,630)")


if __name__ == "__main__":
    from engine.runtime import configure_process

    configure_process()   # keep freed memory, quiet Numba threads (engine/runtime.py)
    main()
