"""Embedding lookup. Symbols: B batch, F sparse fields, K embedding dim, V table rows,
N = B * F looked-up ids, U unique ids in the batch.

One table holds every field's rows: field f's id j is row offsets[f] + j. Ids of different fields
never share a row, so clipping or updating "each id of each field" is the same as doing it for
each row of the one table, and one gather and one scatter serve all fields.

    forward:  out[b, f] = table[ids[b, f]]
    backward: the table's gradient is nonzero only on the rows in the batch, so it is returned
              as RowGrad(ids [U], rows [U, K], counts [U]) with
              rows[u] = sum of dout[b, f] over every (b, f) with ids[b, f] == ids[u];
              no [V, K] array is made.
"""
from typing import NamedTuple

from dataio.arrays import array_module_of


class RowGrad(NamedTuple):
    """Gradient of a table, restricted to the rows that occur in the batch."""

    ids: object     # (U,)   table rows present in the batch
    rows: object    # (U, C) summed gradient of each of those rows
    counts: object  # (U,)   occurrences of each row in the batch (CowClip's cnt_k)


class IdIndex(NamedTuple):
    """The batch's ids, indexed once and shared by every table that the same ids look up."""

    unique: object   # (U,)
    inverse: object  # (N,) position in `unique` of each looked-up id
    counts: object   # (U,)


def index_batch_ids(ids, num_rows: int, kernels) -> IdIndex:
    """ids (B, F) -> IdIndex, with the backend's `index_ids` kernel."""
    unique, inverse, counts = kernels.index_ids(ids.reshape(-1), num_rows)
    return IdIndex(unique, inverse, counts)


def embedding_forward(table, ids):
    """table (V, C), ids (B, F) -> out (B, F, C)."""
    # table[ids], written as take: NumPy's take copies whole rows, 2-4x faster than fancy indexing
    out = array_module_of(table).take(table, ids, axis=0)  # (B, F, C): a gather, rows may repeat
    return out, ids.shape


def embedding_backward(dout, index: IdIndex, kernels) -> RowGrad:
    """dout (B, F, C) -> RowGrad; repeated ids are summed (a scatter-add, not an assignment)."""
    columns = dout.shape[-1]
    rows = kernels.scatter_add_rows(index.inverse, dout.reshape(-1, columns), index.unique.shape[0])
    return RowGrad(index.unique, rows, index.counts)
