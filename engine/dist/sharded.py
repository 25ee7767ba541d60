"""Row-sharded tables (--shard-tables): rank r owns the table rows with row % N == r, and their
Adam moments, as a (V_r, C) shard whose local row i is global row i N + r. Dense weights stay
replicated and data-parallel.

Symbols: N ranks, V table rows, V_r = ceil((V - r) / N) rows owned by rank r, U unique rows in
this rank's share of the batch, C_all the columns of all tables side by side (1 + K).

One step, on every rank:
    forward   unique = the rows this rank's batch reads (U,), sorted
              each goes to its owner (all-to-all); owners answer with their rows (U, C_all)
              the model runs unchanged on compact (U, C) tables: its row ids are positions in `unique`
    backward  the model's RowGrads over compact rows -> back to the owners with their counts
              (all-to-all, in the order of the forward, so ids are not sent twice)
              owners merge what every rank sent, in rank order, with merge_row_grads (as the
              replicated path and --accum do): global cnt_k and g_k for every owned row
    update    engine.step.apply_gradients on the local view {weights, shards} with local
              row ids: L2, CowClip and Adam are per row, and each row has one owner, so the result
              is the replicated update, row for row. In dense mode the table-wide Adam moves
              every row of each shard: each rank does 1/N of that work.
"""
import copy

import numpy as np

from engine.accumulate import merge_row_grads
from engine.dist.gradients import split_columns
from engine.layers.embedding import RowGrad


def owned_rows(num_rows: int, rank: int, size: int) -> int:
    """V_r: rows r, r + N, r + 2N, ... below num_rows."""
    return max(0, (num_rows - rank + size - 1) // size)


class ShardedTables:
    """Routing of table rows between the ranks that read them and the ranks that own them."""

    def __init__(self, comm, model, kernels):
        self.comm, self.model, self.kernels = comm, model, kernels
        self.names = tuple(model.table_names())
        self.num_rows = model.schema.total_rows
        self.local_rows = owned_rows(self.num_rows, comm.rank, comm.size)
        self._routes = None   # what the last lookup sent and received, for the backward

    # ---- placing and collecting shards -----------------------------------------------------

    def shard(self, full):
        """(V, C) -> this rank's (V_r, C) rows."""
        return full[self.comm.rank::self.comm.size].copy()

    def gather_full(self, shard):
        """Every rank's shard -> the (V, C) table on rank 0 (None elsewhere). For checkpoints."""
        host = self.kernels.to_host(shard)
        shards = self.comm.comm.gather(host, root=0)
        if not self.comm.is_root:
            return None
        full = np.empty((self.num_rows, host.shape[1]), dtype=host.dtype)
        for r, part in enumerate(shards):
            full[r::self.comm.size] = part
        return full

    # ---- forward: look rows up at their owners ---------------------------------------------

    def lookup(self, params: dict, unique):
        """unique (U,) sorted global rows -> {table: (U, C) rows}, fetched from their owners."""
        xp, N = self.kernels.xp, self.comm.size
        owner = unique % N
        order = xp.argsort(owner, kind="stable")        # grouped by owner, ascending within each
        send_counts = [int(c) for c in xp.bincount(owner, minlength=N)[:N]] if unique.size else [0] * N
        bounds = np.cumsum([0] + send_counts)
        wanted = unique[order]
        asked, asked_counts = self.comm.alltoall_rows(
            [wanted[lo:hi].astype(xp.int32) for lo, hi in zip(bounds[:-1], bounds[1:])], kind="lookup")
        local = asked.astype(xp.int64) // N
        answer = xp.concatenate([params[n][local] for n in self.names], axis=1)     # (asked, C_all)
        answer_bounds = np.cumsum([0] + asked_counts)
        rows, _ = self.comm.alltoall_rows([answer[lo:hi] for lo, hi in zip(answer_bounds[:-1], answer_bounds[1:])],
                                          kind="lookup")
        compact = xp.empty_like(rows)
        compact[order] = rows
        self._routes = (order, send_counts, local, asked_counts)
        out, at = {}, 0
        for n in self.names:
            width = params[n].shape[1]
            out[n] = xp.ascontiguousarray(compact[:, at:at + width])
            at += width
        return out

    # ---- backward: gradients to the owners --------------------------------------------------

    def route_gradients(self, grads: dict, num_unique: int) -> dict:
        """The compact RowGrads of the last lookup's rows -> {table: RowGrad over this rank's owned
        rows (local ids)}, merged over ranks in rank order."""
        xp = self.kernels.xp
        order, send_counts, local, asked_counts = self._routes
        first = grads[self.names[0]]
        width = sum(grads[n].rows.shape[1] for n in self.names)
        rows = xp.zeros((num_unique, width), dtype=first.rows.dtype)    # (U, C_all), compact order
        counts = xp.zeros(num_unique, dtype=xp.int32)
        at = 0
        for n in self.names:
            g = grads[n]
            rows[g.ids, at:at + g.rows.shape[1]] = g.rows
            counts[g.ids] = g.counts
            at += g.rows.shape[1]
        bounds = np.cumsum([0] + send_counts)
        rows, counts = rows[order], counts[order]                        # the forward's send order
        got_rows, _ = self.comm.alltoall_rows([rows[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])],
                                              kind="sparse")
        got_counts, _ = self.comm.alltoall_rows([counts[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])],
                                                kind="sparse")
        got_bounds = np.cumsum([0] + asked_counts)
        parts = [RowGrad(local[lo:hi], got_rows[lo:hi], got_counts[lo:hi])
                 for lo, hi in zip(got_bounds[:-1], got_bounds[1:])]
        merged = merge_row_grads(parts, max(self.local_rows, 1), self.kernels)
        return split_columns(merged, grads, list(self.names))


def compact_view(model, compact_ids):
    """The model, reading its tables by compact row: its global_ids returns `compact_ids` (B, F),
    positions in the batch's unique rows, so params may hold (U, C) tables. The model's own
    global_ids has already range-checked the batch."""
    view = copy.copy(model)
    view.global_ids = lambda sparse, in_range=True: compact_ids
    return view
