"""Evaluation split over ranks: rank r predicts rows [r n / N, (r + 1) n / N) of the test split,
the predictions are gathered in rank order (so in the split's row order, as one process has them)
and rank 0 computes the metrics over all n rows (engine.evaluate.scores: AUC, logloss, NE,
calibration), which every rank then receives.

With sharded tables the prediction of each chunk looks its rows up at their owners, so every rank
runs the same number of chunks (some may be empty).
"""
from dataio.schema import Batch
from engine.dist.reader import rank_rows
from engine.dist.sharded import compact_view
from engine.evaluate import predict, scores
from engine.layers.loss import sigmoid

CHUNK_ROWS = 65536   # engine.evaluate.predict's batch


def predict_sharded(tables, model, params, arrays: dict, kernels, rows_per_rank: list):
    """Click probabilities (n_r,) of this rank's rows, tables looked up at their owners."""
    xp = kernels.xp
    chunks = -(-max(rows_per_rank) // CHUNK_ROWS)
    out = [xp.zeros(0, dtype=xp.float64)]
    for c in range(chunks):
        part = Batch(*(arrays[k][c * CHUNK_ROWS:(c + 1) * CHUNK_ROWS] for k in ("sparse", "dense", "label")))
        if part.label.shape[0] == 0:
            tables.lookup(params, xp.zeros(0, dtype=xp.int64))      # still answer the other ranks
            continue
        ids = model.global_ids(part.sparse)
        unique, inverse, _ = kernels.index_ids(ids.reshape(-1), model.schema.total_rows)
        compact = tables.lookup(params, unique)
        view = compact_view(model, inverse.reshape(ids.shape))
        logits = view.logits({**params, **compact}, part, kernels)
        out.append(sigmoid(logits.astype(xp.float64)))
    return xp.concatenate(out)


def evaluate_over_ranks(comm, model, params, arrays: dict, kernels, tables=None) -> dict:
    """-> engine.evaluate.scores over all test rows, the same on every rank."""
    n = arrays["label"].shape[0]
    lo, hi = rank_rows(n, comm.rank, comm.size)
    mine = {k: arrays[k][lo:hi] for k in ("sparse", "dense", "label")}
    if tables is None:
        prob = predict(model, params, mine, kernels) if hi > lo else kernels.xp.zeros(0, dtype=kernels.xp.float64)
    else:
        rows_per_rank = [rank_rows(n, r, comm.size)[1] - rank_rows(n, r, comm.size)[0] for r in range(comm.size)]
        prob = predict_sharded(tables, model, params, mine, kernels, rows_per_rank)
    everything, _ = comm.allgather_rows(prob, kind="eval")
    result = None
    if comm.is_root:
        label = kernels.to_host(arrays["label"])
        everything = kernels.to_host(everything)
        result = scores(label, everything)
    return comm.bcast_object(result)
