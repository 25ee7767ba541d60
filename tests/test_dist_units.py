"""engine/dist's pieces that need no MPI: the rank's rows of a batch, dropout draws that do not
depend on N, the owners of table rows, the grouping of tables for exchange, GPU selection."""
from types import SimpleNamespace

import numpy as np
import pytest

from dataio.schema import Batch
from engine.dist.device import select_device
from engine.dist.dropout import GlobalBatchRandom
from engine.dist.gradients import table_groups
from engine.dist.reader import RankSliceReader, rank_rows
from engine.dist.sharded import owned_rows
from engine.layers.embedding import RowGrad


@pytest.mark.parametrize("rows,size", [(512, 2), (7, 3), (2, 4), (131072, 8)])
def test_rank_rows_cover_the_batch_once_in_order(rows, size):
    bounds = [rank_rows(rows, r, size) for r in range(size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == rows
    assert all(hi == next_lo for (_, hi), (next_lo, _) in zip(bounds, bounds[1:]))
    assert max(hi - lo for lo, hi in bounds) - min(hi - lo for lo, hi in bounds) <= 1


def test_rank_slices_of_the_reader_rebuild_its_batches():
    batches = [Batch(np.arange(10 * k, 10 * k + n)[:, None], np.zeros((n, 2)), np.arange(n, dtype=float))
               for k, n in enumerate([5, 5, 3])]
    reader = SimpleNamespace(steps_per_epoch=3, iter_epoch=lambda epoch, start=0: iter(batches[start:]))
    ranks = [list(RankSliceReader(reader, r, 2).iter_epoch(0)) for r in range(2)]
    for k, batch in enumerate(batches):
        rebuilt = np.concatenate([ranks[r][k].sparse for r in range(2)])
        assert np.array_equal(rebuilt, batch.sparse)
    assert len(RankSliceReader(reader, 1, 2)) == 3


def test_a_rank_draws_its_rows_of_the_whole_batch_mask():
    whole = np.random.default_rng(7)
    expected = [whole.random((10, 4)), whole.random((10, 3))]     # one process: two layers' masks
    for lo, hi in [(0, 5), (5, 10)]:
        rng = np.random.default_rng(7)
        draws = GlobalBatchRandom(rng, 10, lo, hi)
        assert np.array_equal(draws.random((hi - lo, 4)), expected[0][lo:hi])
        assert np.array_equal(draws.random((hi - lo, 3)), expected[1][lo:hi])
        assert rng.bit_generator.state == whole.bit_generator.state      # every rank's generator moves alike
    with pytest.raises(ValueError, match="dropout draw of 3 rows"):
        GlobalBatchRandom(np.random.default_rng(0), 10, 0, 5).random((3, 4))


@pytest.mark.parametrize("rows,size", [(10, 3), (3, 4), (337630, 8)])
def test_every_row_has_one_owner(rows, size):
    assert sum(owned_rows(rows, r, size) for r in range(size)) == rows
    assert [owned_rows(rows, r, size) for r in range(size)] == [len(range(r, rows, size)) for r in range(size)]


def test_tables_sharing_ids_are_exchanged_together():
    shared, other = np.arange(3), np.arange(3)
    grads = {"linear.table": RowGrad(shared, np.zeros((3, 1)), shared),
             "embed.table": RowGrad(shared, np.zeros((3, 4)), shared),
             "extra.table": RowGrad(other, np.zeros((3, 2)), other)}
    assert table_groups(grads, ["linear.table", "embed.table", "extra.table"]) == [
        ["linear.table", "embed.table"], ["extra.table"]]


def test_rank_picks_its_gpu_by_local_rank():
    used = []

    class Device:
        def __init__(self, index):
            self.index = index

        def use(self):
            used.append(self.index)

    cupy = SimpleNamespace(cuda=SimpleNamespace(runtime=SimpleNamespace(getDeviceCount=lambda: 4), Device=Device))
    assert [select_device(r, cupy) for r in range(6)] == [0, 1, 2, 3, 0, 1]
    assert used == [0, 1, 2, 3, 0, 1]
    none = SimpleNamespace(cuda=SimpleNamespace(runtime=SimpleNamespace(getDeviceCount=lambda: 0), Device=Device))
    assert select_device(0, none) is None
