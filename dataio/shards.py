"""One HDF5 shard of a split: write it, read it back, validate it.

Symbols: N rows in the shard, F sparse fields, D dense features.

A shard holds
    sparse  int32   (N, F)   category ids, field f in [0, vocab_size[f])
    dense   float32 (N, D)   transformed dense features (D may be 0)
    label   float32 (N,)     0. or 1.
    prob    float64 (N,)     optional: the true click probability (synthetic test shards)
and attributes `format_version` and `rows`.

Datasets are contiguous and uncompressed, so reading a shard is one sequential read per array.

A shard is only ever data inside its own file: a dataset stored in another file (HDF5 external
raw storage), a virtual dataset, and any link other than the plain ones are refused, so a crafted
shard cannot make training read an arbitrary local file. When meta.json records the arrays'
CRC-32s, read_shard recomputes them over the bytes it read and refuses a mismatch (a flipped bit).

A shard's header cannot make the reader allocate what the file does not hold: before any array is
read, each one's declared size (rows x row bytes) is held against the bytes HDF5 stores for it and
against the file's size (stored bytes may be fewer only under compression, by at most deflate's
1032:1), and arrays cut into chunks of under MIN_CHUNK_BYTES are refused (HDF5's per-chunk
overhead would multiply the memory and time of the read many times over).
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import h5py
import numpy as np

from dataio import FORMAT_VERSION

SHARD_ARRAYS = ("sparse", "dense", "label")
MAX_COMPRESSION = 1100        # deflate cannot do better than 1032:1; a larger ratio is a lie
MIN_CHUNK_BYTES = 4096        # h5py's own automatic chunks are 8 KiB or more


def shard_arrays(with_prob: bool) -> tuple[str, ...]:
    """Names of a shard's arrays, in the order they are written and checksummed."""
    return SHARD_ARRAYS + (("prob",) if with_prob else ())


class ShardError(ValueError):
    """A shard file is missing, truncated, corrupt or inconsistent; the message names the file."""


def _fix_hint() -> str:
    return "delete the dataset directory and re-run preprocessing (or dataio.synthetic) to rebuild it"


def create_shard(path: str | os.PathLike, rows: int, num_sparse: int, num_dense: int,
                 with_prob: bool = False) -> h5py.File:
    """Create an empty shard of `rows` rows with contiguous datasets; the caller fills it by slices.

    The file is left open (returned) so a streaming writer can fill row ranges without holding the
    whole shard in memory.
    """
    f = h5py.File(path, "w")
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["rows"] = int(rows)
    f.create_dataset("sparse", shape=(rows, num_sparse), dtype=np.int32)   # (N, F)
    f.create_dataset("dense", shape=(rows, num_dense), dtype=np.float32)   # (N, D)
    f.create_dataset("label", shape=(rows,), dtype=np.float32)             # (N,)
    if with_prob:
        f.create_dataset("prob", shape=(rows,), dtype=np.float64)          # (N,)
    return f


def write_shard(path: str | os.PathLike, sparse: np.ndarray, dense: np.ndarray, label: np.ndarray,
                prob: np.ndarray | None = None) -> None:
    """Write one whole shard.

    sparse (N, F) int, dense (N, D) float, label (N,) float, prob (N,) float or None.
    Arrays are cast to the shard dtypes; shapes must agree.
    """
    sparse = np.asarray(sparse)
    dense = np.asarray(dense)
    label = np.asarray(label)
    n = len(label)
    if dense.ndim == 1 and dense.size == 0:
        dense = dense.reshape(n, 0)
    if sparse.ndim != 2 or dense.ndim != 2 or label.ndim != 1:
        raise ValueError(f"{path}: want sparse (N,F), dense (N,D), label (N,); "
                         f"got {sparse.shape}, {dense.shape}, {label.shape}")
    if sparse.shape[0] != n or dense.shape[0] != n or (prob is not None and len(prob) != n):
        raise ValueError(f"{path}: row counts disagree: sparse {sparse.shape[0]}, dense {dense.shape[0]}, "
                         f"label {n}" + ("" if prob is None else f", prob {len(prob)}"))
    with create_shard(path, n, sparse.shape[1], dense.shape[1], with_prob=prob is not None) as f:
        f["sparse"][...] = sparse.astype(np.int32, copy=False)
        f["dense"][...] = dense.astype(np.float32, copy=False)
        f["label"][...] = label.astype(np.float32, copy=False)
        if prob is not None:
            f["prob"][...] = np.asarray(prob, dtype=np.float64)


def read_shard(path: str | os.PathLike, vocab_sizes: list[int] | np.ndarray | None = None,
               num_dense: int | None = None, check_values: bool = True,
               crc32: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Read and validate one shard; returns {"sparse", "dense", "label"[, "prob"]}.

    Checks: the file opens (not truncated/corrupt), format_version matches, every array is stored
    inside the file (no external storage, virtual dataset or external link), all arrays have `rows`
    rows and the expected dtypes, their CRC-32s equal `crc32` ({array: crc}, from meta.json) when
    given, ids lie in [0, vocab_sizes[f]) when vocab_sizes is given, dense and label are finite and
    labels are 0/1 (when check_values). Any failure raises ShardError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"{path}: shard file is missing; {_fix_hint()}")
    try:
        with h5py.File(path, "r") as f:
            version = f.attrs.get("format_version")
            if version is None or int(version) != FORMAT_VERSION:
                raise ShardError(f"{path}: shard format_version {version!r}, this code reads "
                                 f"{FORMAT_VERSION}; {_fix_hint()}")
            rows = int(f.attrs["rows"])
            _refuse_outside_storage(path, f)
            missing = [k for k in SHARD_ARRAYS if k not in f]
            if missing:
                raise ShardError(f"{path}: shard lacks dataset(s) {missing}; {_fix_hint()}")
            check_declared_sizes(path, f, rows)
            out = {k: f[k][...] for k in SHARD_ARRAYS}
            if "prob" in f:
                out["prob"] = f["prob"][...]
    except ShardError:
        raise
    except (OSError, KeyError, ValueError) as e:  # h5py reports truncation/corruption as OSError
        raise ShardError(f"{path}: cannot read shard ({e}); the file is truncated or corrupt; "
                         f"{_fix_hint()}") from e
    if crc32 is not None:
        _check_crc32(path, out, crc32)
    _validate_arrays(path, out, rows, vocab_sizes, num_dense, check_values)
    return out


def _refuse_outside_storage(path: Path, f: h5py.File) -> None:
    """Every top-level member must be a hard link to a dataset whose bytes live in this file."""
    for name in f:
        link = f.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            raise ShardError(f"{path}: {name!r} is a {type(link).__name__}, not data stored in the shard; "
                             f"refusing to follow it; {_fix_hint()}")
        obj = f[name]
        if not isinstance(obj, h5py.Dataset):
            raise ShardError(f"{path}: {name!r} is not a dataset; {_fix_hint()}")
        if obj.is_virtual:
            raise ShardError(f"{path}: {name!r} is a virtual dataset (its data lives in other files); "
                             f"refusing to read it; {_fix_hint()}")
        if obj.id.get_create_plist().get_external_count() > 0:
            raise ShardError(f"{path}: {name!r} uses external raw storage (its data lives in another file); "
                             f"refusing to read it; {_fix_hint()}")


def check_declared_sizes(path: Path, f: h5py.File, rows: int) -> None:
    """Refuse, before anything is allocated, a shard whose arrays declare more than the file stores
    (rows the file cannot hold) or are stored in absurdly small chunks."""
    if rows < 0:
        raise ShardError(f"{path}: declares {rows} rows; {_fix_hint()}")
    file_bytes, stored_total = path.stat().st_size, 0
    for name in f:
        data = f[name]
        if data.shape[:1] != (rows,):
            raise ShardError(f"{path}: dataset {name} has shape {data.shape}, the shard declares {rows} rows; "
                             f"{_fix_hint()}")
        declared = int(data.size) * data.dtype.itemsize
        stored = int(data.id.get_storage_size())
        stored_total += stored
        plist = data.id.get_create_plist()
        allowed = stored * (MAX_COMPRESSION if plist.get_nfilters() else 1)
        if declared > allowed:
            raise ShardError(f"{path}: dataset {name} declares {data.shape} ({declared:,} bytes) but the file stores "
                             f"{stored:,} bytes of it; the shard's header does not match its data; {_fix_hint()}")
        if plist.get_layout() == h5py.h5d.CHUNKED and declared > MIN_CHUNK_BYTES:
            chunk = plist.get_chunk()
            chunk_bytes = int(np.prod(chunk, dtype=np.int64)) * data.dtype.itemsize
            if chunk_bytes < MIN_CHUNK_BYTES:
                raise ShardError(f"{path}: dataset {name} is stored in chunks of {chunk} ({chunk_bytes} bytes); "
                                 f"chunks under {MIN_CHUNK_BYTES} bytes make reading it many times slower and "
                                 f"larger; {_fix_hint()}")
    if stored_total > file_bytes:
        raise ShardError(f"{path}: its arrays claim {stored_total:,} stored bytes, the file has {file_bytes:,}: "
                         f"it is truncated; {_fix_hint()}")


def crc32_of(array: np.ndarray) -> int:
    """CRC-32 of an array's bytes in C order (zlib.crc32, which releases the GIL on large buffers)."""
    return zlib.crc32(np.ascontiguousarray(array))


def _check_crc32(path: Path, out: dict, expected: dict) -> None:
    for name, want in expected.items():
        if name not in out:
            raise ShardError(f"{path}: meta.json has a checksum for {name!r}, the shard has no such array; "
                             f"{_fix_hint()}")
        got = crc32_of(out[name])
        if got != int(want):
            raise ShardError(f"{path}: {name} fails its checksum (CRC-32 {got:08x}, meta.json records "
                             f"{int(want):08x}): the file is corrupt; {_fix_hint()}")


def _validate_arrays(path: Path, out: dict, rows: int, vocab_sizes, num_dense, check_values: bool) -> None:
    want = {"sparse": np.int32, "dense": np.float32, "label": np.float32, "prob": np.float64}
    for k, a in out.items():
        if a.dtype != want[k]:
            raise ShardError(f"{path}: dataset {k} has dtype {a.dtype}, want {np.dtype(want[k])}; {_fix_hint()}")
        if a.shape[0] != rows:
            raise ShardError(f"{path}: dataset {k} has {a.shape[0]} rows, attrs say {rows}; {_fix_hint()}")
    if out["sparse"].ndim != 2 or out["dense"].ndim != 2:
        raise ShardError(f"{path}: sparse/dense must be 2-D, got {out['sparse'].shape}, {out['dense'].shape}")
    if num_dense is not None and out["dense"].shape[1] != num_dense:
        raise ShardError(f"{path}: {out['dense'].shape[1]} dense columns, meta.json says {num_dense}; {_fix_hint()}")
    if vocab_sizes is not None:
        vocab_sizes = np.asarray(vocab_sizes, dtype=np.int64)
        if out["sparse"].shape[1] != len(vocab_sizes):
            raise ShardError(f"{path}: {out['sparse'].shape[1]} sparse fields, meta.json says "
                             f"{len(vocab_sizes)}; {_fix_hint()}")
        if rows:
            lo = out["sparse"].min(axis=0)
            hi = out["sparse"].max(axis=0)
            bad = np.flatnonzero((lo < 0) | (hi >= vocab_sizes))
            if bad.size:
                f = int(bad[0])
                raise ShardError(f"{path}: sparse field {f} has ids in [{lo[f]}, {hi[f]}] outside "
                                 f"[0, {vocab_sizes[f]}); {_fix_hint()}")
    if check_values and rows:
        if not np.isfinite(out["dense"]).all():
            raise ShardError(f"{path}: dense holds non-finite values; {_fix_hint()}")
        lab = out["label"]
        if not ((lab == 0) | (lab == 1)).all():
            raise ShardError(f"{path}: label holds values other than 0/1; {_fix_hint()}")
        if "prob" in out and not ((out["prob"] >= 0) & (out["prob"] <= 1)).all():
            raise ShardError(f"{path}: prob outside [0, 1]; {_fix_hint()}")


def shard_name(split: str, index: int) -> str:
    """File name of shard `index` of `split`, e.g. train-00003.h5."""
    return f"{split}-{index:05d}.h5"
