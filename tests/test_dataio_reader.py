"""BatchReader: every row once per epoch, order by (seed, epoch), exact resume, drop_last, both modes."""
import numpy as np
import pytest

from dataio.reader import BatchReader, read_split


MODES = [dict(), dict(in_memory_bytes=0, window_shards=2)]  # full permutation / streaming windows


def rows_of(reader, epoch, start_step=0):
    return [b.sparse[:, 0].copy() for b in reader.iter_epoch(epoch, start_step)]


@pytest.mark.parametrize("mode", MODES)
def test_each_row_once_and_consistent(data_dir, mode):
    r = BatchReader(data_dir, "train", 64, seed=1, **mode)
    assert r.in_memory == (not mode)
    batches = list(r.iter_epoch(0))
    assert len(batches) == r.steps_per_epoch == 16
    rows = np.concatenate([b.sparse[:, 0] for b in batches])
    assert np.array_equal(np.sort(rows), np.arange(1000))
    for b in batches:  # the columns of a row travel together
        assert b.sparse.dtype == np.int32 and b.dense.dtype == np.float32 and b.label.dtype == np.float32
        assert np.array_equal(b.sparse[:, 1], b.sparse[:, 0] % 7)
        assert np.allclose(b.dense[:, 0], b.sparse[:, 0] / 1000)
        assert np.array_equal(b.label, b.sparse[:, 0] % 2)


@pytest.mark.parametrize("mode", MODES)
def test_order_depends_on_seed_and_epoch(data_dir, mode):
    a = BatchReader(data_dir, "train", 100, seed=5, **mode)
    b = BatchReader(data_dir, "train", 100, seed=5, prefetch=0, **mode)
    c = BatchReader(data_dir, "train", 100, seed=6, **mode)
    e0, e1 = np.concatenate(rows_of(a, 0)), np.concatenate(rows_of(a, 1))
    assert np.array_equal(e0, np.concatenate(rows_of(b, 0)))
    assert not np.array_equal(e0, e1)
    assert not np.array_equal(e0, np.concatenate(rows_of(c, 0)))
    assert not np.array_equal(e0, np.arange(1000))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch,start", [(64, 5), (100, 3), (64, 15), (64, 16), (333, 1)])
def test_resume_matches_uninterrupted(data_dir, mode, batch, start):
    r = BatchReader(data_dir, "train", batch, seed=2, **mode)
    full = rows_of(r, 3)
    resumed = rows_of(r, 3, start)
    assert len(resumed) == len(full) - start
    for x, y in zip(full[start:], resumed):
        assert np.array_equal(x, y)


@pytest.mark.parametrize("mode", MODES)
def test_drop_last(data_dir, mode):
    r = BatchReader(data_dir, "train", 300, drop_last=True, **mode)
    sizes = [len(b.label) for b in r.iter_epoch(0)]
    assert sizes == [300, 300, 300] and r.steps_per_epoch == 3
    r = BatchReader(data_dir, "train", 300, drop_last=False, **mode)
    assert [len(b.label) for b in r.iter_epoch(0)] == [300, 300, 300, 100]


@pytest.mark.parametrize("mode", MODES)
def test_no_shuffle_is_file_order_and_huge_batch(data_dir, mode):
    r = BatchReader(data_dir, "train", 131072, shuffle=False, **mode)
    (b,) = list(r.iter_epoch(0))
    assert np.array_equal(b.sparse[:, 0], np.arange(1000))
    r = BatchReader(data_dir, "train", 131072, shuffle=True, drop_last=True, **mode)
    assert r.steps_per_epoch == 0 and list(r.iter_epoch(0)) == []


def test_to_device_and_early_break(data_dir):
    seen = []
    r = BatchReader(data_dir, "train", 50, to_device=lambda a: seen.append(a.dtype) or a * 1)
    for i, _ in enumerate(r.iter_epoch(0)):
        if i == 2:
            break  # the prefetch thread must stop, not hang
    assert len(seen) == 9
    assert len(list(r.iter_epoch(1))) == 20


def test_read_split(data_dir):
    s = read_split(data_dir, "train")
    assert np.array_equal(s["sparse"][:, 0], np.arange(1000))
    assert s["dense"].shape == (1000, 2) and "prob" not in s
