"""A training split kept in GPU memory, shuffled and sliced there.

Symbols: N rows in the split, B batch size, F sparse fields, D dense features.

`DeviceBatchReader` has BatchReader's interface (`iter_epoch(epoch, start_step)`,
`steps_per_epoch`) and yields exactly the batches that BatchReader yields in its in-memory mode
for the same seed (dataio/reader.py): epoch e is perm = default_rng([seed, e]).permutation(N),
batch k holds rows sort(perm[k B:(k+1) B]). The permutation is drawn on the host with that same
NumPy generator (so CPU and GPU runs see the same batches), copied to the device once per epoch
(N int32), and every batch is a sort and three gathers on the device: no host copy per step.
The split's ids were range-checked when read, so its batches are `CheckedBatch`es: the model
skips its per-step check (a host sync on a device).

`train_reader` is what engine/train.py calls: this reader when the array module is not NumPy,
BatchReader would hold the split in memory (the same order), and the split takes at most
DEVICE_SHARE of the device's free memory; else BatchReader's host batches, copied to the device
through a ring of pinned host buffers, asynchronously on the current stream (dataio/pinned.py,
PinnedBatchReader). The pinned path is tested with a stand-in for CuPy only; it has not run on a
GPU. Not done: BatchReader's streaming order (splits above its in_memory_bytes, e.g. full Criteo
at the default 4 GiB) is not reproduced here, so such splits keep the host reader.
"""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from dataio.pinned import CupyPinned, PinnedBatchReader
from dataio.reader import _ARRAYS, BatchReader, read_split
from dataio.schema import Batch, CheckedBatch

DEVICE_SHARE = 0.25      # the most of the free device memory the training split may take


class DeviceBatchReader:
    """Batches of one split, resident in the memory of array module `xp` (cupy; numpy in tests)."""

    def __init__(self, data_dir: str | os.PathLike, split: str, batch_size: int, *, xp, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        # the host reader validates the options and the files and owns the order's definition
        self.order = BatchReader(data_dir, split, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last,
                                 prefetch=0)
        self.xp, self.batch_size, self.num_rows = xp, self.order.batch_size, self.order.num_rows
        host = read_split(data_dir, split)
        self.arrays = [xp.asarray(host[k]) for k in _ARRAYS]        # sparse (N, F), dense (N, D), label (N,)

    in_memory = True   # the whole split is held (on the device), as BatchReader's in-memory mode holds it

    @property
    def steps_per_epoch(self) -> int:
        return self.order.steps_per_epoch

    def iter_epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """Yield the batches of `epoch` from step `start_step` on, as BatchReader does."""
        if not 0 <= start_step <= self.steps_per_epoch:
            raise ValueError(f"start_step {start_step} outside [0, {self.steps_per_epoch}]")
        xp, B, N = self.xp, self.batch_size, self.num_rows
        perm = None
        if self.order.shuffle:
            perm = xp.asarray(self.order._epoch_rng(epoch).permutation(N).astype(np.int32))   # (N,)
        for step in range(start_step, self.steps_per_epoch):
            if perm is None:
                yield CheckedBatch(*(a[step * B:min((step + 1) * B, N)] for a in self.arrays))
            else:
                idx = xp.sort(perm[step * B:(step + 1) * B])                               # (B,)
                yield CheckedBatch(*(xp.take(a, idx, axis=0) for a in self.arrays))


def split_bytes(reader: BatchReader) -> int:
    """Bytes of the split's arrays in memory: int32 ids, float32 features and label."""
    return reader.num_rows * 4 * (len(reader.vocab_sizes) + reader.num_dense + 1)


def train_reader(data_dir, batch_size: int, seed: int, xp, free_device_bytes: int | None = None, pinned=None):
    """The training loop's reader: on a device, the split kept there when it fits, else host
    batches copied through pinned buffers (see above). `pinned`: CupyPinned() unless given."""
    reader = BatchReader(data_dir, "train", batch_size, shuffle=True, seed=seed)
    if xp is np:
        return reader
    if reader.in_memory:
        if free_device_bytes is None:
            free_device_bytes = xp.cuda.Device().mem_info[0]
        if split_bytes(reader) <= DEVICE_SHARE * free_device_bytes:
            return DeviceBatchReader(data_dir, "train", batch_size, xp=xp, shuffle=True, seed=seed)
    return PinnedBatchReader(reader, CupyPinned() if pinned is None else pinned)
