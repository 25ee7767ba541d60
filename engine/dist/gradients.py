"""Data-parallel gradients: each rank's share of the batch gradient, and their exact sum.

Symbols: b rows in the global batch, b_r rows on rank r, U_r unique table rows on rank r,
C columns of a table (K for embed.table, 1 for linear.table).

The model's gradients are means over the rows it is given. Rank r's mean over its b_r rows,
weighted by b_r / b, summed over ranks, is the mean over all b rows: the one-process gradient.

    dense   weight * g_r, flattened into one buffer and summed in rank order (Communicator)
    tables  RowGrad(ids U_r, weight * rows (U_r, C), counts U_r) of every rank, gathered and merged
            by engine.accumulate.merge_row_grads, the function that merges --accum micro-batches:
            rows of one id are summed and counts added, so CowClip sees the global batch's cnt_k
            and g_k and clips once per global batch (Algorithm 1). Every rank merges the same
            parts in the same (rank) order, so every replica gets bitwise the same update.
"""
import numpy as np

from engine.accumulate import accumulated_loss_and_grads, merge_row_grads
from engine.dist.dropout import GlobalBatchRandom
from engine.layers.embedding import RowGrad


def local_loss_and_grads(model, params, batch, kernels, rng, accum: int, global_rows: int, lo: int):
    """Loss and gradients of this rank's rows [lo, lo + b_r), weighted by b_r / b.
    -> (weighted loss, grads); a rank with no rows returns zeros."""
    rows = int(batch.label.shape[0])
    if rows == 0:
        return 0.0, zero_grads(model, params, kernels.xp)
    if accum > 1:
        loss, grads = accumulated_loss_and_grads(model, params, batch, accum, kernels, rng)
    else:
        draws = GlobalBatchRandom(rng, global_rows, lo, lo + rows) if rng is not None else None
        loss, grads = model.loss(params, batch, kernels, training=True, rng=draws)
    weight = rows / global_rows
    scaled = {}
    for name, g in grads.items():
        scaled[name] = RowGrad(g.ids, g.rows * weight, g.counts) if isinstance(g, RowGrad) else g * weight
    return loss * weight, scaled   # scaled RowGrads keep their id arrays: tables that shared ids still do


def zero_grads(model, params, xp) -> dict:
    """The gradients of no rows: zero dense arrays, empty RowGrads (sharing one id array)."""
    ids, counts = xp.zeros(0, dtype=xp.int64), xp.zeros(0, dtype=xp.int64)
    tables = set(model.table_names())
    return {name: RowGrad(ids, xp.zeros((0, p.shape[1]), dtype=p.dtype), counts) if name in tables
            else xp.zeros_like(p) for name, p in params.items()}


def sum_dense(comm, grads: dict, table_names) -> dict:
    """Dense gradients of every rank -> their sum (rank order), the same bits on every rank."""
    names = sorted(n for n in grads if n not in table_names)
    if not names:
        return {}
    xp = _module_of(grads[names[0]])
    flat = xp.concatenate([grads[n].reshape(-1) for n in names])
    total = comm.sum_fixed_order(flat, kind="dense")
    out, at = {}, 0
    for n in names:
        size = grads[n].size
        out[n] = total[at:at + size].reshape(grads[n].shape)
        at += size
    return out


def table_groups(grads: dict, table_names) -> list:
    """Tables whose RowGrads share one id array (the model indexes a batch's ids once for both
    tables): [[name, ...], ...], in table_names order. Each group is exchanged as one."""
    groups = []
    for name in table_names:
        for group in groups:
            if grads[group[0]].ids is grads[name].ids:
                group.append(name)
                break
        else:
            groups.append([name])
    return groups


def side_by_side(grads: dict, names: list):
    """The rows of tables sharing ids, as one (U, C_1 + C_2 + ...) array."""
    rows = [grads[n].rows for n in names]
    return rows[0] if len(rows) == 1 else _module_of(rows[0]).concatenate(rows, axis=1)


def split_columns(merged: RowGrad, grads: dict, names: list) -> dict:
    """One RowGrad over side-by-side columns -> a RowGrad per table (sharing ids and counts)."""
    out, at = {}, 0
    for n in names:
        width = grads[n].rows.shape[1]
        rows = merged.rows[:, at:at + width]
        out[n] = RowGrad(merged.ids, _module_of(rows).ascontiguousarray(rows), merged.counts)  # kernels want contiguous rows
        at += width
    return out


def merge_over_ranks(comm, grads: dict, table_names, num_rows: int, kernels) -> dict:
    """Every rank's table RowGrads -> the global batch's, merged as --accum merges micro-batches."""
    xp, out = kernels.xp, {}
    for names in table_groups(grads, table_names):
        g = grads[names[0]]
        ids, counts_per_rank = comm.allgather_rows(g.ids.astype(xp.int32))     # row ids < 2^31
        counts, _ = comm.allgather_rows(g.counts.astype(xp.int32))
        rows, _ = comm.allgather_rows(side_by_side(grads, names))
        bounds = np.cumsum([0] + counts_per_rank)
        parts = [RowGrad(ids[lo:hi].astype(xp.int64), rows[lo:hi], counts[lo:hi])
                 for lo, hi in zip(bounds[:-1], bounds[1:])]
        out.update(split_columns(merge_row_grads(parts, num_rows, kernels), grads, names))
    return out


def _module_of(array):
    from dataio.arrays import array_module_of

    return array_module_of(array)
