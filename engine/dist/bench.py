"""Samples/s over ranks and the bytes each rank sends per step, measured; and the same bytes
projected to N ranks from the data's real batches.

    mpiexec -n 2 python -m engine.dist.bench --bs 16384 --steps 5          # measure (also -n 1)
    python -m engine.dist.bench --project 8 --bs 131072                     # bytes at N = 8, one process

Symbols: N ranks, b global batch, P dense parameters, s bytes per parameter (4 in float32),
K embedding dim, U_r unique table rows in rank r's b / N rows, c_ro of them owned by rank o
(row % N == o). Per rank and step (what engine/dist/comm.py counts):

    dense, both layouts    2 (N - 1) ceil(P / N) s                    all-to-all + all-gather of chunks
    sparse, replicated     (N - 1) U_r (4 + 4 + (1 + K) s)           all-gather of ids, counts, rows
    sparse, sharded        sum_{o != r} c_ro (4 + (1 + K) s)          rows and counts to their owners
    lookup, sharded        sum_{o != r} c_ro 4 + sum_{a != r} c_ar (1 + K) s    ids out, rows back

The projection evaluates these formulas on the data's batches cut N ways; at N = 2 it must equal
the counters of a measured run (tests/test_dist.py checks it).
"""
import json
import time

import click
import numpy as np

from engine.dist.reader import rank_rows
from models import ModelConfig, Schema, build_model

ID_BYTES = COUNT_BYTES = 4   # ids and counts travel as int32


def dense_parameter_count(model) -> int:
    """P: the data-parallel parameters (everything but the tables)."""
    tables = set(model.table_names())
    return int(sum(p.size for k, p in model.init_params(0).items() if k not in tables))


def projected_bytes(model, sparse_batch: np.ndarray, size: int, itemsize: int = 4) -> list[dict]:
    """Bytes each of `size` ranks sends in one step on this global batch (B, F) of field-local ids.
    -> [{"dense", "sparse_replicated", "sparse_sharded", "lookup_sharded"}] per rank."""
    P, K = dense_parameter_count(model), model.config.embed_dim
    row_bytes = (1 + K) * itemsize
    ids = sparse_batch.astype(np.int64) + np.asarray(model.offsets)[None, :]
    unique = []
    for r in range(size):
        lo, hi = rank_rows(ids.shape[0], r, size)
        unique.append(np.unique(ids[lo:hi]))
    owned = np.array([[int(np.sum(u % size == o)) for o in range(size)] for u in unique])   # c_ro
    out = []
    for r in range(size):
        to_others = int(owned[r].sum() - owned[r, r])
        asked_by_others = int(owned[:, r].sum() - owned[r, r])
        out.append({"dense": 2 * (size - 1) * -(-P // size) * itemsize,
                    "sparse_replicated": (size - 1) * len(unique[r]) * (ID_BYTES + COUNT_BYTES + row_bytes),
                    "sparse_sharded": to_others * (row_bytes + COUNT_BYTES),
                    "lookup_sharded": to_others * ID_BYTES + asked_by_others * row_bytes})
    return out


def _model_and_data(data, model_name, embed_dim):
    from dataio.meta import load_meta
    from dataio.synthetic import ensure_default

    data = data or str(ensure_default())
    schema = Schema.from_meta(load_meta(data))
    return data, schema, build_model(model_name, schema, ModelConfig(embed_dim=embed_dim))


def measure(data, model_name, bs, steps, shard_tables, embed_optim, embed_dim, seed) -> dict:
    """Time `steps` training steps (after one warm-up) on the ranks of COMM_WORLD."""
    from dataio.reader import BatchReader
    from engine.backend import get_backend
    from engine.dist.comm import Communicator
    from engine.dist.session import Distributed
    from engine.optim import AdamState
    from engine.step import StepConfig, apply_gradients

    data, schema, model = _model_and_data(data, model_name, embed_dim)
    kernels = get_backend("cpu")
    dist = Distributed(Communicator(), shard_tables, check_every=0)
    dist.attach(model, kernels)
    params = model.init_params(seed)
    params, state = dist.place(params, AdamState.zeros_like(params, np))
    reader = dist.wrap_reader(BatchReader(data, "train", bs, shuffle=True, seed=seed))
    config = StepConfig(lr=1e-3, lr_embed=1e-4, l2=1e-5, clip=1.0, bound=1e-5, embed_optim=embed_optim)
    seconds, sent = [], {}
    for step, batch in enumerate(reader.iter_epoch(0)):
        if step == 1:
            dist.comm.bytes_sent.clear()        # count the timed steps only
        dist.comm.barrier()
        t0 = time.perf_counter()
        loss, grads = dist.loss_and_grads(model, params, batch, kernels, None, 1)
        apply_gradients(model, params, grads, state, config, kernels)
        dist.comm.barrier()
        if step >= 1:
            seconds.append(time.perf_counter() - t0)
        if step == steps:
            break
    sent = {k: v // len(seconds) for k, v in dist.comm.bytes_sent.items()}
    per_rank = dist.comm.allgather_object(sent)
    return {"ranks": dist.size, "bs": bs, "model": model_name, "shard_tables": shard_tables,
            "embed_optim": embed_optim, "V": schema.total_rows, "step_seconds": [round(s, 4) for s in seconds],
            "samples_per_s": bs / float(np.median(seconds)),
            "bytes_sent_per_step_per_rank": per_rank, "is_root": dist.is_root}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", default=None, help="dataset directory (default: the built-in 4M-row synthetic set)")
@click.option("--model", "model_name", default="deepfm", show_default=True)
@click.option("--bs", default=16384, show_default=True, type=int, help="global batch")
@click.option("--steps", default=5, show_default=True, type=int, help="timed steps after one warm-up")
@click.option("--shard-tables", is_flag=True)
@click.option("--embed-optim", default="dense", show_default=True, type=click.Choice(["dense", "lazy"]))
@click.option("--embed-dim", default=10, show_default=True, type=int)
@click.option("--seed", default=1235, show_default=True, type=int)
@click.option("--project", default=0, type=int, help="N: print the bytes per rank at N ranks (no MPI needed)")
@click.option("--batches", default=3, show_default=True, type=int, help="with --project: batches averaged")
def main(data, model_name, bs, steps, shard_tables, embed_optim, embed_dim, seed, project, batches):
    """Measure samples/s and bytes per step over MPI ranks, or project the bytes to N ranks."""
    if project:
        from dataio.reader import BatchReader

        data, schema, model = _model_and_data(data, model_name, embed_dim)
        reader = BatchReader(data, "train", bs, shuffle=True, seed=seed, prefetch=0)
        rows = []
        for step, batch in enumerate(reader.iter_epoch(0)):
            if step == batches:
                break
            rows.append(projected_bytes(model, batch.sparse, project))
        mean = {k: float(np.mean([r[k] for per_rank in rows for r in per_rank])) for k in rows[0][0]}
        print(json.dumps({"ranks": project, "bs": bs, "model": model_name, "V": schema.total_rows,
                          "dense_parameters": dense_parameter_count(model), "batches": len(rows),
                          "mean_bytes_per_step_per_rank": {k: round(v) for k, v in mean.items()},
                          "per_rank_first_batch": rows[0]}))
        return
    result = measure(data, model_name, bs, steps, shard_tables, embed_optim, embed_dim, seed)
    if result.pop("is_root"):
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    from engine.run.runtime import configure_process

    configure_process()
    main()
