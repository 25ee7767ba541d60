"""dataio/pinned.py with a stand-in for CuPy's pinned buffers, stream copies and events.

The stand-in makes a copy take its data from the pinned buffer only when it completes (when an
event after it is waited on, or when the test drains the stream), as an asynchronous copy on a
GPU may. A reader that rewrote a buffer before its copy completed would deliver the wrong bits."""
import numpy as np
import pytest

from dataio.device_reader import split_bytes, train_reader
from dataio.pinned import PinnedBatchReader
from dataio.reader import BatchReader

GARBAGE = -7     # what a pinned buffer or device array holds before it is written


class FakeStream:
    """Pinned buffers, copies queued in stream order, events; records what happened."""

    def __init__(self):
        self.allocations: list[np.ndarray] = []
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []    # (pinned source, device target)
        self.copies_done = 0
        self.waits = 0

    def empty_pinned(self, shape, dtype):
        buffer = np.full(shape, GARBAGE, dtype=dtype)
        self.allocations.append(buffer)
        return buffer

    def copy_to_device(self, host):
        assert any(np.shares_memory(host, b) for b in self.allocations), "copy from memory that is not pinned"
        for source, _ in self.pending:
            assert not np.shares_memory(host, source), "pinned buffer written while its copy may still run"
        device = np.full(host.shape, GARBAGE, dtype=host.dtype)
        self.pending.append((host, device))
        return device

    def record(self):
        return self.copies_done + len(self.pending)      # the event completes with the copies queued so far

    def wait(self, event):
        self.waits += 1
        self._complete(event - self.copies_done)

    def drain(self):
        self._complete(len(self.pending))

    def _complete(self, count):
        for source, device in self.pending[:max(count, 0)]:
            np.copyto(device, source)
        self.pending = self.pending[max(count, 0):]
        self.copies_done += max(count, 0)


def host_batches(reader, epoch, start):
    return [tuple(np.array(a) for a in b) for b in reader.iter_epoch(epoch, start)]


def assert_same(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert type(a).__name__ == "Batch"
        for x, y in zip(a, b):
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)


@pytest.mark.parametrize("shuffle, drop_last, batch_size, slots, in_memory_bytes", [
    (True, False, 128, 2, 4 << 30), (True, True, 128, 2, 4 << 30), (False, False, 300, 3, 4 << 30),
    (True, False, 128, 1, 4 << 30), (True, False, 96, 2, 1)])      # in_memory_bytes=1: the streaming order
def test_batches_arrive_bit_identical_in_the_reader_order(data_dir, shuffle, drop_last, batch_size, slots,
                                                          in_memory_bytes):
    def reader():
        return BatchReader(data_dir, "train", batch_size, shuffle=shuffle, seed=3, drop_last=drop_last,
                           in_memory_bytes=in_memory_bytes)
    host, fake = reader(), FakeStream()
    pinned = PinnedBatchReader(reader(), fake, slots=slots)
    assert pinned.steps_per_epoch == host.steps_per_epoch and pinned.num_rows == host.num_rows
    batches = 0
    for epoch, start in ((0, 0), (1, 0), (1, 3), (2, host.steps_per_epoch - 1), (2, host.steps_per_epoch)):
        got = list(pinned.iter_epoch(epoch, start))    # copies left in flight until the drain below
        fake.drain()
        assert_same(got, host_batches(host, epoch, start))
        batches += len(got)
    assert len(fake.allocations) == 3 * slots          # sparse, dense, label per slot, reused for every batch
    assert fake.copies_done == 3 * batches
    assert fake.waits == batches - slots            # every batch after the ring's first round waits on its slot


def test_a_slot_is_rewritten_only_after_its_copies_complete(data_dir):
    fake = FakeStream()
    pinned = PinnedBatchReader(BatchReader(data_dir, "train", 128, seed=1), fake, slots=2)
    stream = pinned.iter_epoch(0)
    next(stream), next(stream)
    assert len(fake.pending) == 6 and fake.waits == 0  # two batches in flight, nothing waited on
    next(stream)
    assert fake.waits == 1 and len(fake.pending) == 6  # the first slot's copies were completed, then reused
    assert fake.copies_done == 3


def test_an_abandoned_epoch_leaves_no_buffer_unguarded(data_dir):
    host = BatchReader(data_dir, "train", 128, seed=2)
    fake = FakeStream()
    pinned = PinnedBatchReader(BatchReader(data_dir, "train", 128, seed=2), fake, slots=2)
    first = [b for _, b in zip(range(3), pinned.iter_epoch(0))]     # stop after 3 batches
    second = list(pinned.iter_epoch(1))
    fake.drain()
    assert_same(first, host_batches(host, 0, 0)[:3])
    assert_same(second, host_batches(host, 1, 0))


def test_the_reader_must_yield_host_batches(data_dir):
    with pytest.raises(ValueError, match="to_device=None"):
        PinnedBatchReader(BatchReader(data_dir, "train", 128, to_device=np.asarray), FakeStream())


def test_train_reader_uses_pinned_buffers_only_for_a_device_split_that_does_not_fit(data_dir):
    import types
    fake_cupy = types.SimpleNamespace(asarray=np.asarray, sort=np.sort, take=np.take)
    fake = FakeStream()
    fits_bytes = split_bytes(BatchReader(data_dir, "train", 128))
    too_big = train_reader(data_dir, 128, 0, fake_cupy, free_device_bytes=fits_bytes * 2, pinned=fake)
    assert isinstance(too_big, PinnedBatchReader) and too_big.pinned is fake
    numpy_run = train_reader(data_dir, 128, 0, np, pinned=fake)
    assert type(numpy_run) is BatchReader and numpy_run.to_device is None
    next(numpy_run.iter_epoch(0))
    assert fake.allocations == []
