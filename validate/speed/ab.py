"""Before / after: each optimised piece of the DeepFM step against its plain form (the form it
replaced, kept as its test oracle), interleaved in one process so that a busy machine slows both
alike (the bench's `--ab`). On the problem of validate/speed/problem.py.

Symbols: B batch, F sparse fields, K embedding dim, V table rows, H hidden width.
"""
from __future__ import annotations

import statistics
import time

import numba
import numpy as np

from engine.kernels.adam import update_table_row
from validate.errors import normwise_rel_error
from validate.speed.problem import HIDDEN, make_batch, make_model, make_params


def _median(xs):
    return statistics.median(xs) if xs else float("nan")


@numba.njit(parallel=True, cache=True)
def _table_adam_float64_math(table, m, v, position, row_grads, l2, clip_absent, absent_ratio, absent_floor,
                             lr_t, beta1, beta2, eps):
    """The dense table Adam before it computed in the table's dtype: update_table_row (float64
    arithmetic, the form the CUDA kernel still runs) on every row, two threads."""
    for r in numba.prange(table.shape[0]):
        update_table_row(table, m, v, r, position[r], row_grads, l2, clip_absent, absent_ratio, absent_floor,
                         lr_t, beta1, beta2, eps)


def _table_adam_map_per_call(table, m, v, ids, row_grads, *args):
    """The dense table Adam before TableAdam kept its [V] position map: a new map every call."""
    from engine.kernels import adam

    position = adam.row_positions(np, table.shape[0], ids)
    adam._adam_table_cpu(table, m, v, position, row_grads, *args)


def ab_compare(batch_size: int, vocab: int, rounds: int = 3) -> list[tuple]:
    """-> rows (piece, plain seconds, optimised seconds, difference), medians over `rounds`
    alternations; difference: normwise_rel_error(optimised, plain) of the first call's results,
    for the pieces that return an array (NaN for the in-place table updates)."""
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

    cpu = get_backend("cpu")

    def fast_mlp():
        h, caches = mlp_forward(x0, weights, biases, kernels=cpu)
        return mlp_backward(dh, caches, cpu)[0]

    def plain_fm():                       # NumPy forward, backward, then the DNN's demb added
        _, cache = fm_forward_plain(emb)
        return fm_backward_plain(dlogits, cache, add=x0[:, :F * K].reshape(-1, F, K))

    def fast_fm():                        # the fused kernels, the DNN's demb added in the same pass
        _, cache = fm_forward(emb, cpu)
        return fm_backward(dlogits, cache, x0[:, :F * K].reshape(-1, F, K), cpu)

    head_w = rng.standard_normal((HIDDEN[-1], 1), dtype=np.float32)
    index = get_backend("cpu").index_ids(ids.reshape(-1), model.schema.total_rows)
    rows = rng.standard_normal((index[0].size, K), dtype=np.float32)
    moments = [np.zeros_like(table), np.zeros_like(table)]
    table_adam = adam.TableAdam()
    adam_args = (index[0], rows, 1e-5, True, 1.0, 1e-4, 1e-4, 0.9, 0.999, 1e-7)
    position = adam.row_positions(np, table.shape[0], index[0])
    pieces = [
        ("gather table[ids] -> take", lambda: table[ids], lambda: embedding_forward(table, ids)[0]),
        ("DNN fwd+bwd (dW layout, ReLU mask, in place)", plain_mlp, fast_mlp),
        ("FM fwd + bwd + DNN's demb (fused kernels)", plain_fm, fast_fm),
        ("head backward: dy W^T as GEMM -> outer kernel", lambda: dlogits[:, None] @ head_w.T,
         lambda: outer_cpu(dlogits, head_w[:, 0], np.empty_like(dh))),
        ("dense table Adam: [V] map kept", lambda: _table_adam_map_per_call(table, *moments, *adam_args),
         lambda: table_adam(table, *moments, *adam_args)),
        ("dense table Adam: float64 -> table-dtype math",
         lambda: _table_adam_float64_math(table, *moments, position, *adam_args[1:]),
         lambda: adam._adam_table_cpu(table, *moments, position, *adam_args[1:])),
    ]
    out = []
    for name, plain, fast in pieces:
        plain_out, fast_out = plain(), fast()                                     # compile, warm
        difference = (normwise_rel_error(fast_out, plain_out) if isinstance(plain_out, np.ndarray)
                      else float("nan"))
        times = ([], [])
        for _ in range(rounds):
            for i, f in enumerate((plain, fast)):
                t0 = time.perf_counter()
                f()
                times[i].append(time.perf_counter() - t0)
        out.append((name, _median(times[0]), _median(times[1]), difference))
    return out
