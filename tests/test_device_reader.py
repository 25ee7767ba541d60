"""dataio/device_reader.py with xp = numpy standing in for CuPy: the same batches as BatchReader
(same seed, every epoch, from any start step, shuffled or not, with and without drop_last), and
train_reader's choice between the two readers."""
import types

import numpy as np
import pytest

from dataio.device_reader import DeviceBatchReader, split_bytes, train_reader
from dataio.meta import write_meta
from dataio.reader import BatchReader
from dataio.shards import write_shard


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """1,000 rows in 5 shards; sparse column 0 is the row index."""
    d = tmp_path_factory.mktemp("device_reader")
    n, shard = 1000, 230
    names = []
    for i, start in enumerate(range(0, n, shard)):
        rows = np.arange(start, min(start + shard, n))
        names.append(f"train-{i:05d}.h5")
        write_shard(d / names[-1], np.stack([rows, rows % 7], axis=1),
                    (rows[:, None] / n * np.ones((1, 2))).astype(np.float32), (rows % 2).astype(np.float32))
    write_shard(d / "test-00000.h5", np.zeros((3, 2)), np.zeros((3, 2)), np.zeros(3))
    write_meta(d, {"kind": "synthetic", "bayes": {"test_auc": 0.5, "test_logloss": 0.7},
                   "sparse_features": [{"name": "row", "vocab_size": n}, {"name": "m7", "vocab_size": 7}],
                   "dense_features": [{"name": "a", "transform": {}}, {"name": "b", "transform": {}}],
                   "splits": {"train": {"rows": n, "shards": names},
                              "test": {"rows": 3, "shards": ["test-00000.h5"]}},
                   "source": {"path": None, "bytes": 0, "sha256": None}, "options": {}})
    return d


@pytest.mark.parametrize("shuffle, drop_last, batch_size", [(True, False, 128), (True, True, 128),
                                                            (False, False, 300), (True, False, 1000)])
def test_same_batches_as_batch_reader(data_dir, shuffle, drop_last, batch_size):
    host = BatchReader(data_dir, "train", batch_size, shuffle=shuffle, seed=5, drop_last=drop_last, prefetch=0)
    device = DeviceBatchReader(data_dir, "train", batch_size, xp=np, shuffle=shuffle, seed=5, drop_last=drop_last)
    assert device.steps_per_epoch == host.steps_per_epoch
    for epoch, start in ((0, 0), (1, 0), (1, 3 % host.steps_per_epoch)):
        want, got = list(host.iter_epoch(epoch, start)), list(device.iter_epoch(epoch, start))
        assert len(got) == len(want) == host.steps_per_epoch - start
        for a, b in zip(got, want):
            for x, y in zip(a, b):
                assert x.dtype == y.dtype and np.array_equal(x, y)
    if shuffle and batch_size < 1000:       # epochs differ, so the test would see a wrong epoch
        assert not np.array_equal(next(device.iter_epoch(0)).sparse, next(device.iter_epoch(1)).sparse)


def test_train_reader_keeps_the_split_on_the_device_only_when_it_fits(data_dir):
    fake_cupy = types.SimpleNamespace(asarray=np.asarray, sort=np.sort, take=np.take)   # a non-NumPy module
    fits = train_reader(data_dir, 128, 0, fake_cupy, free_device_bytes=10**9)
    assert isinstance(fits, DeviceBatchReader)
    too_big = train_reader(data_dir, 128, 0, fake_cupy, free_device_bytes=split_bytes(fits.order) * 2)
    assert isinstance(too_big, BatchReader) and too_big.to_device is np.asarray
    assert isinstance(train_reader(data_dir, 128, 0, np), BatchReader)
