"""Host batches copied to the device through a ring of page-locked (pinned) host buffers.

Symbols: B batch size, F sparse fields, D dense features, R slots in the ring.

A copy from pageable host memory makes the CUDA driver stage it through its own pinned buffer,
synchronously, in the calling thread. `PinnedBatchReader` instead copies each host batch of a
BatchReader (sparse (B, F), dense (B, D), label (B,)) into one of R slots of pinned buffers sized
for a full batch, and queues the copies to the device asynchronously on the current stream,
then records an event on that stream. The loop's kernels for that batch are queued behind the
copies on the same stream, so they see the whole batch. A slot is written again R batches later,
and only after its event has completed: a buffer is never overwritten while its copy may still
run. The batches and their order are the wrapped reader's; only the way they reach the device
changes. Asynchronous rather than synchronous copies: the calling thread returns at once and can
queue the step's kernels while the copy runs; the per-slot event is what keeps that safe. The host
batch is still gathered into its own array first and then copied into the pinned buffer (one more
host copy than gathering into the buffer directly).

`CupyPinned` is the few lines of CuPy this needs; tests pass an object with the same methods.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from dataio.schema import Batch

RING_SLOTS = 2      # batches whose host-to-device copies may be in flight at once


class CupyPinned:
    """Pinned buffers, asynchronous copies and events of CuPy's current device and stream."""

    def __init__(self):
        import cupy
        import cupyx
        self.cupy, self.cupyx = cupy, cupyx

    def empty_pinned(self, shape: tuple, dtype) -> np.ndarray:
        return self.cupyx.empty_pinned(shape, dtype=dtype)

    def copy_to_device(self, host: np.ndarray):
        """Queue host (pinned) -> a new device array on the current stream; returns at once."""
        device = self.cupy.empty(host.shape, dtype=host.dtype)
        device.set(host, stream=self.cupy.cuda.get_current_stream())
        return device

    def record(self):
        return self.cupy.cuda.get_current_stream().record()

    def wait(self, event) -> None:
        event.synchronize()


class _Slot:
    """One batch's pinned buffers (full-batch rows) and the event after their last copies."""

    def __init__(self):
        self.buffers: list[np.ndarray | None] = []
        self.event = None


class PinnedBatchReader:
    """A host BatchReader (built with to_device=None) whose batches reach the device through
    `RING_SLOTS` slots of pinned buffers. Same interface and batches as the wrapped reader."""

    def __init__(self, reader, pinned, slots: int = RING_SLOTS):
        if reader.to_device is not None:
            raise ValueError("PinnedBatchReader copies host batches itself: build the reader with to_device=None")
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.reader, self.pinned = reader, pinned
        self.ring = [_Slot() for _ in range(slots)]
        self._next = 0

    def __getattr__(self, name):            # num_rows, in_memory, batch_size, ...: the reader's
        if name == "reader":
            raise AttributeError(name)
        return getattr(self.reader, name)

    @property
    def steps_per_epoch(self) -> int:
        return self.reader.steps_per_epoch

    def iter_epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """Yield the reader's batches of `epoch` from `start_step` on, as device arrays."""
        for batch in self.reader.iter_epoch(epoch, start_step):
            yield type(batch)(*self._to_device(batch))

    def _to_device(self, host: Batch) -> list:
        slot = self.ring[self._next]
        self._next = (self._next + 1) % len(self.ring)
        if slot.event is not None:
            self.pinned.wait(slot.event)      # the slot's previous copies have finished
            slot.event = None
        out = []
        for i, array in enumerate(host):
            buffer = self._buffer(slot, i, array)
            view = buffer[:array.shape[0]]    # a last, shorter batch uses the leading rows
            np.copyto(view, array)
            out.append(self.pinned.copy_to_device(view))
        slot.event = self.pinned.record()
        return out

    def _buffer(self, slot: _Slot, i: int, array: np.ndarray) -> np.ndarray:
        """Slot's pinned buffer for the batch's i-th array: (max(B, rows),) + row shape, reused."""
        while len(slot.buffers) <= i:
            slot.buffers.append(None)
        buffer = slot.buffers[i]
        rows = max(self.reader.batch_size, array.shape[0])
        if buffer is None or buffer.dtype != array.dtype or buffer.shape[1:] != array.shape[1:] \
                or buffer.shape[0] < array.shape[0]:
            buffer = slot.buffers[i] = self.pinned.empty_pinned((rows,) + array.shape[1:], array.dtype)
        return buffer
