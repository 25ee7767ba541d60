"""Stream the rows of each split into fixed-size shards and publish the directory atomically.

Symbols: n rows in an appended block, F sparse fields, D dense features.

The number of rows of every split is known before writing (both preprocessing passes and the
synthetic generator plan it), so each shard is created at its final size and filled by row slices:
memory stays at one appended block, and datasets stay contiguous.

Everything is written under `.<out>.tmp-<pid>`; finish() writes meta.json last and renames the
directory to `<out>`, so a half-written dataset never looks finished. What `<out>` may already be
(and what happens to links and leftovers) is outdir.py's business.

Each shard array's CRC-32 is computed while its rows are written (zlib.crc32 continues over row
slices written in order) and recorded in meta.json, splits[name]["crc32"][i] = {array: crc}; the
reader recomputes it over the arrays it reads (shards.read_shard), so a flipped bit is an error.
"""
from __future__ import annotations

import os
import shutil
import zlib
from pathlib import Path

import numpy as np

from dataio.errors import PreprocessError
from dataio.meta import write_meta
from dataio.outdir import check_out_dir, is_own_dataset, remove_stale_temps
from dataio.shards import create_shard, shard_arrays, shard_name

DEFAULT_SHARD_ROWS = 1 << 20


class _SplitSink:
    """Fills the planned shards of one split in order."""

    def __init__(self, tmp_dir: Path, split: str, rows: int, shard_rows: int, num_sparse: int,
                 num_dense: int, with_prob: bool):
        self.split, self.rows = split, rows
        sizes = [shard_rows] * (rows // shard_rows)
        if rows % shard_rows or rows == 0:
            sizes.append(rows % shard_rows)
        self.sizes = sizes
        self.names = [shard_name(split, i) for i in range(len(sizes))]
        self.tmp_dir, self.num_sparse, self.num_dense, self.with_prob = tmp_dir, num_sparse, num_dense, with_prob
        self.shard_index, self.fill, self.file, self.written = -1, 0, None, 0
        self.crcs: list[dict[str, int]] = []   # per shard: {array name: CRC-32 of its bytes}
        self._next_shard()

    def _next_shard(self) -> None:
        if self.file is not None:
            self.file.close()
        self.shard_index += 1
        self.fill = 0
        self.file = create_shard(self.tmp_dir / self.names[self.shard_index], self.sizes[self.shard_index],
                                 self.num_sparse, self.num_dense, self.with_prob)
        self.crcs.append({k: 0 for k in shard_arrays(self.with_prob)})

    def append(self, sparse, dense, label, prob) -> None:
        n = len(label)
        if self.written + n > self.rows:
            raise PreprocessError(f"split {self.split}: {self.written + n} rows, {self.rows} planned (did the "
                                  f"input change while being read?); nothing was written")
        start = 0
        while start < n:
            if self.fill == self.sizes[self.shard_index]:
                self._next_shard()
            take = min(n - start, self.sizes[self.shard_index] - self.fill)
            rows = slice(self.fill, self.fill + take)
            crcs = self.crcs[-1]
            for name, values in (("sparse", sparse), ("dense", dense), ("label", label), ("prob", prob)):
                if name in crcs:
                    block = np.ascontiguousarray(values[start:start + take], dtype=self.file[name].dtype)
                    self.file[name][rows] = block
                    crcs[name] = zlib.crc32(block, crcs[name])
            self.fill += take
            start += take
        self.written += n

    def close(self) -> None:
        if self.written != self.rows:
            raise PreprocessError(f"split {self.split}: {self.written} rows, {self.rows} planned (did the "
                                  f"input change while being read?); nothing was written")
        # Create any (empty) shards not reached yet; only happens for rows == 0.
        while self.shard_index < len(self.sizes) - 1:
            self._next_shard()
        self.file.close()
        self.file = None


class DatasetWriter:
    """Write a dataset directory: planned splits -> shards -> meta.json -> atomic rename.

    split_rows: {"train": n_train, "test": n_test, ...}; prob_splits: splits that store `prob`.
    """

    def __init__(self, out_dir: str | os.PathLike, split_rows: dict[str, int], num_sparse: int, num_dense: int,
                 shard_rows: int = DEFAULT_SHARD_ROWS, prob_splits: tuple[str, ...] = ()):
        self.out_dir = check_out_dir(out_dir)        # the real path (a link to a dataset is followed)
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.out_dir)
        self.tmp_dir = self.out_dir.parent / f".{self.out_dir.name}.tmp-{os.getpid()}"
        if self.tmp_dir.exists():
            shutil.rmtree(self.tmp_dir)
        self.tmp_dir.mkdir()
        self.num_sparse, self.num_dense = num_sparse, num_dense
        self.sinks = {}
        try:
            for s, n in split_rows.items():
                self.sinks[s] = _SplitSink(self.tmp_dir, s, int(n), shard_rows, num_sparse, num_dense,
                                           s in prob_splits)
        except BaseException:
            self.abort()
            raise

    def append(self, split: str, sparse: np.ndarray, dense: np.ndarray, label: np.ndarray,
               prob: np.ndarray | None = None) -> None:
        """Append rows to `split`: sparse (n, F) int32, dense (n, D) float32, label (n,), prob (n,)."""
        self.sinks[split].append(sparse, dense, label, prob)

    def finish(self, meta: dict, extra_files: dict[str, bytes] | None = None) -> Path:
        """Close shards, write extra files and meta.json, and move the directory into place."""
        for sink in self.sinks.values():
            sink.close()
        meta = dict(meta)
        meta["splits"] = {s: {"rows": k.rows, "shards": k.names, "crc32": k.crcs} for s, k in self.sinks.items()}
        for name, data in (extra_files or {}).items():
            (self.tmp_dir / name).write_bytes(data)
        write_meta(self.tmp_dir, meta)
        if self.out_dir.exists() and os.listdir(self.out_dir):
            if not is_own_dataset(self.out_dir):   # someone put files there while we worked
                raise PreprocessError(f"{self.out_dir}: is no longer a dataset written by this tool; "
                                      f"left untouched, nothing was written")
            # Replace an older dataset: move it aside first so out_dir is never half-old, half-new.
            old = self.out_dir.parent / f".{self.out_dir.name}.old-{os.getpid()}"
            os.replace(self.out_dir, old)
            os.replace(self.tmp_dir, self.out_dir)
            shutil.rmtree(old)
        else:
            if self.out_dir.exists():
                self.out_dir.rmdir()                # an empty directory
            os.replace(self.tmp_dir, self.out_dir)
        return self.out_dir

    def abort(self) -> None:
        """Drop everything written so far."""
        for sink in self.sinks.values():
            if sink.file is not None:
                sink.file.close()
                sink.file = None
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
