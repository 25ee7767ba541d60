"""Shuffled, resumable, prefetched mini-batches from a dataset directory.

Symbols: N rows in the split, B batch size, F sparse fields, D dense features, S rows in a shard.

Order. The order of an epoch is a pure function of (seed, epoch), so a run resumed at
(epoch, start_step) sees exactly the batches an uninterrupted run would see from that step on.
Two shuffling modes, chosen by the size of the split:
  * in memory (split <= in_memory_bytes, default 4 GiB; the 4M-row synthetic set is ~0.7 GB):
    all shards are loaded once and each epoch is a full permutation of the N rows,
    perm = default_rng([seed, epoch]).permutation(N). Batch k is rows perm[k B:(k+1) B]. This is
    the exact i.i.d. shuffle the reference (Keras fit, shuffle=True) does.
  * streaming (larger splits, e.g. full Criteo, ~7 GB): shards are visited in an order permuted by
    (seed, epoch), `window_shards` at a time; the rows of a window are loaded and permuted together
    (a shuffle buffer of window_shards * S rows) and cut into batches that run across window
    boundaries. Resuming skips whole windows without reading them.
With shuffle=False both modes give the rows in file order.

Within a batch the gathered rows are sorted by row index before the gather (faster memory access);
the set of rows in each batch and the order of batches are what the permutation says.

Prefetch. A background thread assembles the next `prefetch` batches while the caller trains (NumPy
copies release the GIL, so they overlap). `to_device` (e.g. cupy.asarray) is applied in the calling
thread: CUDA's current device and stream are per thread, and the training loop owns them.
"""
from __future__ import annotations

import math
import os
import queue
import threading
from collections import namedtuple
from pathlib import Path
from typing import Callable, Iterator

import h5py
import numpy as np

from dataio.meta import load_meta, shard_crcs, vocab_sizes
from dataio.schema import Batch
from dataio.shards import read_shard

_ARRAYS = ("sparse", "dense", "label")
_BYTES_PER_ID = 4


def read_split(data_dir: str | os.PathLike, split: str) -> dict[str, np.ndarray]:
    """All rows of a split ("train", "valid" or "test"): {"sparse" (N, F), "dense" (N, D), "label" (N,)
    [, "prob" (N,)]}. Each shard's checksums are verified when meta.json records them."""
    meta = load_meta(data_dir)
    if split not in meta["splits"]:
        raise KeyError(f"{Path(data_dir) / 'meta.json'}: no split {split!r}; have {list(meta['splits'])}")
    sizes = vocab_sizes(meta)
    parts = [read_shard(Path(data_dir) / name, sizes, len(meta["dense_features"]), crc32=crc)
             for name, crc in zip(meta["splits"][split]["shards"], shard_crcs(meta, split))]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if len(out["label"]) != meta["splits"][split]["rows"]:
        raise ValueError(f"{Path(data_dir) / 'meta.json'}: split {split!r} should have "
                         f"{meta['splits'][split]['rows']} rows, its shards hold {len(out['label'])}; "
                         f"re-run preprocessing")
    return out


class BatchReader:
    """Batches of one split ("train", "valid" or "test"); see the module docstring for the order and
    prefetching. Shards are checked against meta.json's checksums as they are loaded.

    Use: for batch in reader.iter_epoch(epoch, start_step): ...  (batch is a Batch)
    """

    def __init__(self, data_dir: str | os.PathLike, split: str, batch_size: int, *, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, prefetch: int = 2,
                 to_device: Callable | None = None, in_memory_bytes: int = 4 << 30, window_shards: int = 4):
        self.data_dir = Path(data_dir)
        self.meta = load_meta(self.data_dir)
        if split not in self.meta["splits"]:
            raise KeyError(f"{self.data_dir / 'meta.json'}: no split {split!r}; have {list(self.meta['splits'])}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.split, self.batch_size, self.shuffle, self.seed = split, int(batch_size), shuffle, int(seed)
        self.drop_last, self.prefetch, self.to_device = drop_last, int(prefetch), to_device
        self.window_shards = max(1, int(window_shards))
        self.vocab_sizes = vocab_sizes(self.meta)
        self.num_dense = len(self.meta["dense_features"])
        self.shard_paths = [self.data_dir / n for n in self.meta["splits"][split]["shards"]]
        self.shard_crcs = shard_crcs(self.meta, split)
        self.shard_rows = [self._rows_of(p) for p in self.shard_paths]
        self.num_rows = int(sum(self.shard_rows))
        if self.num_rows != self.meta["splits"][split]["rows"]:
            raise ValueError(f"{self.data_dir / 'meta.json'}: split {split!r} should have "
                             f"{self.meta['splits'][split]['rows']} rows, shards hold {self.num_rows}; "
                             f"re-run preprocessing")
        row_bytes = _BYTES_PER_ID * (len(self.vocab_sizes) + self.num_dense + 1)
        self.in_memory = self.num_rows * row_bytes <= in_memory_bytes
        self._arrays: dict[str, np.ndarray] | None = None

    @staticmethod
    def _rows_of(path: Path) -> int:
        try:
            with h5py.File(path, "r") as f:
                return int(f.attrs["rows"])
        except (OSError, KeyError) as e:
            raise ValueError(f"{path}: cannot read shard header ({e}); the file is truncated or corrupt; "
                             f"re-run preprocessing") from e

    def _read(self, i: int) -> dict:
        """Shard i, validated and checked against its recorded checksums."""
        return read_shard(self.shard_paths[i], self.vocab_sizes, self.num_dense, crc32=self.shard_crcs[i])

    @property
    def steps_per_epoch(self) -> int:
        """Number of batches per epoch: floor(N / B) with drop_last, else ceil(N / B)."""
        if self.drop_last:
            return self.num_rows // self.batch_size
        return math.ceil(self.num_rows / self.batch_size)

    # ---- order ---------------------------------------------------------------------------------

    def _epoch_rng(self, epoch: int, *more: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(epoch), *more])

    def _memory_batches(self, epoch: int, start_step: int) -> Iterator[tuple]:
        if self._arrays is None:
            parts = [self._read(i) for i in range(len(self.shard_paths))]
            self._arrays = {k: np.concatenate([p[k] for p in parts]) for k in _ARRAYS}
        a = self._arrays
        perm = self._epoch_rng(epoch).permutation(self.num_rows) if self.shuffle else None
        B = self.batch_size
        for step in range(start_step, self.steps_per_epoch):
            if perm is None:
                rows = slice(step * B, min((step + 1) * B, self.num_rows))
                yield tuple(np.ascontiguousarray(a[k][rows]) for k in _ARRAYS)
            else:
                idx = np.sort(perm[step * B:(step + 1) * B])
                yield tuple(np.take(a[k], idx, axis=0) for k in _ARRAYS)

    def _windows(self, epoch: int) -> list[list[int]]:
        """Shard indices grouped into shuffle windows, in this epoch's order."""
        order = self._epoch_rng(epoch).permutation(len(self.shard_paths)) if self.shuffle \
            else np.arange(len(self.shard_paths))
        w = self.window_shards
        return [list(order[i:i + w]) for i in range(0, len(order), w)]

    def _stream_batches(self, epoch: int, start_step: int) -> Iterator[tuple]:
        B = self.batch_size
        skip = start_step * B                      # rows of this epoch already consumed
        limit = self.steps_per_epoch * B           # rows this epoch yields (drop_last trims the tail)
        pending: list[tuple] = []                  # pieces of the batch being assembled
        pending_rows = 0
        consumed = 0                               # rows of the epoch passed so far (yielded or skipped)
        for wi, window in enumerate(self._windows(epoch)):
            window_rows = sum(self.shard_rows[s] for s in window)
            if consumed + window_rows <= skip:     # whole window before the resume point: not read
                consumed += window_rows
                continue
            parts = [self._read(s) for s in window]
            arrays = [np.concatenate([p[k] for p in parts]) if len(parts) > 1 else parts[0][k] for k in _ARRAYS]
            # the window's shuffle is a permutation of its rows; each batch gathers its slice of it
            # (sorted, for memory locality) instead of the whole window being permuted first
            perm = self._epoch_rng(epoch, 1, wi).permutation(window_rows) if self.shuffle else None
            pos = max(0, skip - consumed)
            consumed += pos
            while pos < window_rows and consumed < limit:
                take = min(B - pending_rows, window_rows - pos, limit - consumed)
                if perm is None:
                    pending.append(tuple(x[pos:pos + take] for x in arrays))
                else:
                    idx = np.sort(perm[pos:pos + take])
                    pending.append(tuple(np.take(x, idx, axis=0) for x in arrays))
                pending_rows += take
                pos += take
                consumed += take
                if pending_rows == B:
                    yield _join(pending)
                    pending, pending_rows = [], 0
            consumed += window_rows - pos
        if pending_rows and not self.drop_last:
            yield _join(pending)

    # ---- iteration -----------------------------------------------------------------------------

    def iter_epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """Yield the batches of `epoch` from step `start_step` on (steps_per_epoch - start_step of them)."""
        if not 0 <= start_step <= self.steps_per_epoch:
            raise ValueError(f"start_step {start_step} outside [0, {self.steps_per_epoch}]")
        source = (self._memory_batches if self.in_memory else self._stream_batches)(epoch, start_step)
        if self.prefetch > 0:
            source = _prefetched(source, self.prefetch)
        put = self.to_device
        for sparse, dense, label in source:
            if put is not None:
                sparse, dense, label = put(sparse), put(dense), put(label)
            yield Batch(sparse, dense, label)


def _join(pieces: list[tuple]) -> tuple:
    if len(pieces) == 1:
        return tuple(np.ascontiguousarray(x) for x in pieces[0])
    return tuple(np.concatenate([p[i] for p in pieces]) for i in range(len(pieces[0])))


_DONE = object()


def _prefetched(source: Iterator, depth: int) -> Iterator:
    """Run `source` in a daemon thread, `depth` items ahead; errors are re-raised in the caller."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as e:  # forwarded to the consumer
            q.put(e)

    thread = threading.Thread(target=produce, daemon=True, name="BatchReader-prefetch")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # the consumer stopped early (break / exception): let the producer exit
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
