"""What the training loop (engine/train.py) talks to under MPI (--dist mpi): one object,
`Distributed`, joining the communicator, the rank's share of the data, the gradient exchange,
sharded tables, the replica check and evaluation over ranks. It answers the calls of
engine/run/process.py's `SingleProcess`, so the loop is the same for one process and N ranks;
all MPI logic is here and in the modules it names.
"""
import math
import sys

import numpy as np

from engine.dist.evaluate import evaluate_over_ranks
from engine.dist.gradients import local_loss_and_grads, merge_over_ranks, sum_dense
from engine.dist.reader import RankSliceReader
from engine.dist.replicas import check_replicas
from engine.dist.sharded import ShardedTables, compact_view
from engine.optim import AdamState


class Distributed:
    """One rank of an N-rank run. Set up by engine.dist.connect; `attach` once the backend and
    model exist."""

    def __init__(self, comm, shard_tables: bool, check_every: int):
        self.comm, self.shard_tables, self.check_every = comm, shard_tables, check_every
        self.model = self.kernels = self.tables = None
        self.rows_in_last_batch = 0
        self.steps = 0

    @property
    def rank(self) -> int:
        return self.comm.rank

    @property
    def size(self) -> int:
        return self.comm.size

    @property
    def is_root(self) -> bool:
        return self.comm.is_root

    # ---- set-up -----------------------------------------------------------------------------

    def settle(self, cfg, resumed: bool) -> None:
        """A fresh run records N and the table layout in its config; a resumed one must run on the
        N it was saved with (its batches were cut N ways), and keeps its layout."""
        if cfg.early_stop:
            raise ValueError("--early-stop with --dist mpi is not supported: train on one process to use it")
        if cfg.dropout > 0 and cfg.accum > 1:
            raise ValueError("--dist mpi with --dropout > 0 needs --accum 1 (each rank draws its rows of "
                             "the whole batch's dropout masks; micro-batches would draw other masks)")
        if resumed:
            if cfg.ranks != self.size:
                raise ValueError(f"this run was trained on {cfg.ranks} rank(s); resume it on as many "
                                 f"(mpiexec -n {cfg.ranks} ...), not {self.size}")
            self.shard_tables = cfg.shard_tables
        if self.shard_tables and cfg.audit:
            raise ValueError("--audit is not available with --shard-tables (each rank sees only its rows' clips)")
        self.check_every = cfg.check_replicas_every
        cfg.dist, cfg.ranks, cfg.shard_tables = "mpi", self.size, self.shard_tables

    def agree(self, value):
        """Rank 0's value (e.g. a run directory named after the time) on every rank."""
        return self.comm.bcast_object(value)

    def barrier(self) -> None:
        self.comm.barrier()

    def abort(self, message: str) -> None:
        """Stop every rank: the others may wait in a collective. The message names this rank."""
        if self.size > 1:
            print(f"Error (rank {self.rank}): {message}", file=sys.stderr, flush=True)
            self.comm.abort(1)

    def attach(self, model, kernels) -> None:
        """Use this backend: device arrays are staged through host memory, one GPU per rank."""
        from engine.dist.device import select_device

        self.model, self.kernels = model, kernels
        if kernels.xp is not np:
            select_device(self.comm.local_rank)
            self.comm.to_host, self.comm.to_device = kernels.to_host, kernels.xp.asarray
        if self.shard_tables:
            self.tables = ShardedTables(self.comm, model, kernels)

    def wrap_reader(self, reader):
        return RankSliceReader(reader, self.rank, self.size)

    def place(self, params: dict, state: AdamState) -> tuple[dict, AdamState]:
        """Full parameters and state (fresh or from a checkpoint) -> this rank's: tables cut to
        its shard with --shard-tables, everything else as it is."""
        if self.tables is None:
            return params, state
        cut = self.tables.shard
        names = self.tables.names
        params = {k: cut(v) if k in names else v for k, v in params.items()}
        state = AdamState({k: cut(v) if k in names else v for k, v in state.m.items()},
                          {k: cut(v) if k in names else v for k, v in state.v.items()}, state.updates)
        return params, state

    # ---- one step ---------------------------------------------------------------------------

    def loss_and_grads(self, model, params: dict, batch, kernels, rng, accum: int) -> tuple[float, dict]:
        """This rank's batch share -> (global mean loss, global gradients), the same on every rank.
        With sharded tables the table gradients are over this rank's owned rows (local ids)."""
        local_rows = int(batch.label.shape[0])
        rows = self.comm.allgather_object(local_rows)
        global_rows, lo = sum(rows), sum(rows[:self.rank])
        self.rows_in_last_batch = global_rows
        table_names = tuple(model.table_names())
        if self.tables is None:
            loss, grads = local_loss_and_grads(model, params, batch, kernels, rng, accum, global_rows, lo)
            tables = merge_over_ranks(self.comm, grads, table_names, model.schema.total_rows, kernels)
        else:
            loss, grads, tables = self._sharded_loss_and_grads(model, params, batch, kernels, rng, accum,
                                                               global_rows, lo)
        dense = sum_dense(self.comm, grads, table_names)
        loss = float(self.comm.sum_fixed_order(np.asarray([loss], dtype=np.float64), kind="loss")[0])
        return loss, {**dense, **tables}

    def _sharded_loss_and_grads(self, model, params, batch, kernels, rng, accum, global_rows, lo):
        xp = kernels.xp
        if batch.label.shape[0]:
            ids = model.global_ids(batch.sparse)                                # (b_r, F), range-checked
            unique, inverse, _ = kernels.index_ids(ids.reshape(-1), model.schema.total_rows)
            compact_ids = inverse.reshape(ids.shape)
        else:
            unique, compact_ids = xp.zeros(0, dtype=xp.int64), None
        compact = self.tables.lookup(params, unique)                            # {table: (U, C)}
        view = compact_view(model, compact_ids)
        loss, grads = local_loss_and_grads(view, {**params, **compact}, batch, kernels, rng, accum,
                                           global_rows, lo)
        tables = self.tables.route_gradients({n: grads[n] for n in self.tables.names}, int(unique.shape[0]))
        return loss, grads, tables

    def after_step(self, params: dict, state: AdamState, global_step: int) -> None:
        """Every check_every steps: stop if the replicated arrays differ between ranks."""
        self.steps += 1
        if self.check_every and global_step % self.check_every == 0:
            self.check(params, state, global_step)

    def check(self, params: dict, state: AdamState, global_step: int) -> None:
        replicated = self._replicated(params, state)
        check_replicas(self.comm, replicated, self.kernels.to_host, global_step)

    def _replicated(self, params: dict, state: AdamState) -> dict:
        sharded = set(self.tables.names) if self.tables is not None else set()
        out = {}
        for prefix, arrays in (("param/", params), ("m/", state.m), ("v/", state.v)):
            out.update({prefix + k: v for k, v in arrays.items() if k not in sharded})
        return out

    # ---- evaluation, checkpoints, what the run reports ----------------------------------------

    def evaluate(self, model, params: dict, arrays: dict, kernels) -> dict:
        return evaluate_over_ranks(self.comm, model, params, arrays, kernels, self.tables)

    def full_state(self, params: dict, state: AdamState):
        """-> (params, state) with whole tables on rank 0, (None, None) on other ranks: what the
        checkpoint holds, so it is the one-process format (resumable, scored by engine.evaluate)."""
        if self.tables is None:
            return (params, state) if self.is_root else (None, None)
        gather = self.tables.gather_full
        names = self.tables.names
        full = {k: gather(v) if k in names else v for k, v in params.items()}
        m = {k: gather(v) if k in names else v for k, v in state.m.items()}
        v = {k: gather(x) if k in names else x for k, x in state.v.items()}
        if not self.is_root:
            return None, None
        to_device = self.kernels.xp.asarray
        return ({k: to_device(a) for k, a in full.items()},
                AdamState({k: to_device(a) for k, a in m.items()}, {k: to_device(a) for k, a in v.items()},
                          state.updates))

    def table_bytes(self, params: dict, state: AdamState) -> int:
        """Bytes this rank holds for the tables and their Adam moments."""
        names = self.model.table_names()
        return int(sum(params[n].nbytes + state.m[n].nbytes + state.v[n].nbytes for n in names))

    def summary(self, params: dict, state: AdamState) -> dict:
        """What the run's final_metrics.json records about the ranks (every rank must call it)."""
        per_rank = self.comm.allgather_object({"table_bytes": self.table_bytes(params, state),
                                               "bytes_sent": dict(self.comm.bytes_sent)})
        steps = max(self.steps, 1)
        return {"ranks": self.size, "shard_tables": self.shard_tables,
                "table_bytes_per_rank": [p["table_bytes"] for p in per_rank],
                "bytes_sent_per_step_per_rank": [{k: math.ceil(b / steps) for k, b in p["bytes_sent"].items()}
                                                 for p in per_rank]}
