"""Exact large-batch emulation: a batch of b rows processed as n micro-batches.

Each micro-batch's loss is a mean over its own rows, so its gradients are weighted by
(its rows / b) and summed: the result is the mean-over-b gradient of the whole batch. Table
gradients are merged by id: the micro-batches' ids are indexed together, their rows summed and
their counts added, so CowClip sees the whole batch's cnt_k and summed g_k, exactly as if the
batch had been processed at once, while only one micro-batch of activations is ever held.
"""
from engine.layers.embedding import RowGrad


def micro_batches(batch, num_micro: int):
    """Split a batch (sparse, dense, label) into num_micro contiguous slices."""
    n = batch.label.shape[0]
    bounds = [n * i // num_micro for i in range(num_micro + 1)]
    return [type(batch)(*(a[lo:hi] for a in batch)) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]


def merge_row_grads(parts: list, num_rows: int, kernels) -> RowGrad:
    """RowGrads of several micro-batches (same table) -> one RowGrad over the union of ids."""
    xp = kernels.xp
    ids = xp.concatenate([p.ids for p in parts])
    rows = xp.concatenate([p.rows for p in parts])
    counts = xp.concatenate([p.counts for p in parts]).astype(xp.int64)
    unique, inverse, _ = kernels.index_ids(ids, num_rows)
    merged_rows = kernels.scatter_add_rows(inverse, rows, unique.shape[0])
    merged_counts = kernels.scatter_add_rows(inverse, counts[:, None], unique.shape[0])[:, 0]
    return RowGrad(unique, merged_rows, merged_counts)


def accumulated_loss_and_grads(model, params, batch, num_micro: int, kernels, rng=None):
    """-> (mean loss over the batch, grads of the mean loss), one micro-batch at a time."""
    total = batch.label.shape[0]
    loss_sum, grads_sum, table_parts = 0.0, {}, {}
    for micro in micro_batches(batch, num_micro):
        weight = micro.label.shape[0] / total
        loss, grads = model.loss(params, micro, kernels, training=True, rng=rng)
        loss_sum += weight * loss
        for name, g in grads.items():
            if isinstance(g, RowGrad):      # a table: its micro-batches' rows are merged by id below
                table_parts.setdefault(name, []).append(RowGrad(g.ids, g.rows * weight, g.counts))
            elif name in grads_sum:
                grads_sum[name] += weight * g
            else:
                grads_sum[name] = weight * g
    for name, parts in table_parts.items():
        grads_sum[name] = merge_row_grads(parts, model.schema.total_rows, kernels)
    return loss_sum, grads_sum
