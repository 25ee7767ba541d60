"""dataio/device_reader.py with xp = numpy standing in for CuPy: the same batches as BatchReader
(same seed, every epoch, from any start step, shuffled or not, with and without drop_last), and
train_reader's choice between the two readers."""
import types

import numpy as np
import pytest

from dataio.device_reader import DeviceBatchReader, split_bytes, train_reader
from dataio.pinned import PinnedBatchReader
from dataio.reader import BatchReader


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
    too_big = train_reader(data_dir, 128, 0, fake_cupy, free_device_bytes=split_bytes(fits.order) * 2,
                           pinned=object())
    assert isinstance(too_big, PinnedBatchReader) and isinstance(too_big.reader, BatchReader)
    assert isinstance(train_reader(data_dir, 128, 0, np), BatchReader)
