"""Vocabularies in the reference (LabelEncoder) order, with min-count and one OOV id per field.

Symbols: n values of a chunk, U distinct values, V vocabulary size of a field.

Field f's vocabulary is the sorted array of its kept distinct raw values: int64 codes, or the raw
bytes of a value (an object array of bytes; Avazu), compared as bytes, which for UTF-8 text is the
order of Python's str and so of LabelEncoder.
Id of a value = its position in that array; values not in it (rarer than min_count, or unseen when
encoding new data with --vocab-from) get the OOV id = len(values), the last id. So
vocab_size = len(values) + 1 and, with min_count = 1, the ids of all seen values are exactly
LabelEncoder's codes.

Order: Criteo codes are int64 (see tokenize.py), sorted numerically. Byte-string fields (Avazu) are
sorted as pandas would type them: if every distinct value of the field parses as an integer,
pandas.read_csv makes the column int64 and LabelEncoder sorts numerically; otherwise it is an
object column and sorts as strings.

vocab.npz holds, per field name, either `NAME` (int64 (V-1,), sorted) or `NAME.bytes` (uint8, the
values concatenated) with `NAME.offsets` (int64 (V,), value i is bytes[offsets[i]:offsets[i+1]]);
older files hold `NAME` as a unicode array, read as UTF-8 bytes.
"""
from __future__ import annotations

import hashlib
import io

import numba
import numpy as np


class ValueCounter:
    """Distinct values and their counts of one field, accumulated over chunks.

    Chunk results are merged lazily (when the pending part outgrows the merged part), so the cost
    stays O(total log total) even for fields with millions of distinct values.
    """

    def __init__(self):
        self.values: np.ndarray | None = None   # (U,) sorted
        self.counts: np.ndarray | None = None   # (U,) int64
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.pending_size = 0

    def add(self, col: np.ndarray) -> None:
        """Count the values of col (n,)."""
        values, counts = np.unique(col, return_counts=True)
        self.pending.append((values, counts))
        self.pending_size += len(values)
        if self.pending_size > max(1 << 20, 2 * (0 if self.values is None else len(self.values))):
            self._merge()

    def _merge(self) -> None:
        parts = self.pending + ([(self.values, self.counts)] if self.values is not None else [])
        self.pending, self.pending_size = [], 0
        if not parts:
            return
        values = np.concatenate([p[0] for p in parts])
        counts = np.concatenate([p[1] for p in parts])
        self.values, inverse = np.unique(values, return_inverse=True)
        self.counts = np.bincount(inverse.ravel(), weights=counts, minlength=len(self.values)).astype(np.int64)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(values (U,) sorted, counts (U,))."""
        self._merge()
        if self.values is None:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        return self.values, self.counts


def reference_order(values: np.ndarray) -> np.ndarray:
    """Sort distinct values the way read_csv + LabelEncoder would: numerically if all are ints.

    Byte strings that name the same integer ("7", "07") are one value to pandas, so one id here.
    """
    if values.dtype.kind in "iu":
        return np.sort(values)
    try:
        as_int = np.array([int(v) for v in values], dtype=np.int64)
    except (ValueError, OverflowError):
        return np.sort(values)
    return np.unique(as_int)


def keep_frequent(values: np.ndarray, counts: np.ndarray, min_count: int) -> np.ndarray:
    """Values seen at least min_count times, in their sorted order."""
    return values[counts >= min_count] if min_count > 1 else values


def encode(col: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Ids (n,) int32 of col (n,) in the sorted vocabulary values (V-1,); unknown -> OOV = len(values)."""
    if values.dtype.kind in "iu" and col.dtype.kind not in "iu":
        col = to_int_or_sentinel(col)
    pos = np.searchsorted(values, col)
    clipped = np.minimum(pos, max(len(values) - 1, 0))
    found = (pos < len(values)) & (values[clipped] == col) if len(values) else np.zeros(len(col), bool)
    return np.where(found, pos, len(values)).astype(np.int32)


_NOT_AN_INT = np.iinfo(np.int64).min  # never a real value: pandas could not have read it as int64


def to_int_or_sentinel(col: np.ndarray) -> np.ndarray:
    """str column -> int64, values that are not integers -> a sentinel (so they encode as OOV)."""
    out = np.empty(len(col), dtype=np.int64)
    for i, v in enumerate(col):
        try:
            out[i] = int(v)
        except (ValueError, OverflowError):
            out[i] = _NOT_AN_INT
    return out


def save_vocabs(names: list[str], vocabs: list[np.ndarray]) -> bytes:
    """npz bytes holding each field's sorted values (layout in the module docstring)."""
    arrays = {}
    for name, values in zip(names, vocabs):
        if values.dtype == object:
            lengths = np.array([len(v) for v in values], dtype=np.int64)
            arrays[f"{name}.bytes"] = np.frombuffer(b"".join(values), dtype=np.uint8)
            arrays[f"{name}.offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        else:
            arrays[name] = values
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def vocab_digest(names: list[str], vocabs: list[np.ndarray]) -> str:
    """sha256 over every field's name and its values in id order: two datasets with equal digests
    give every raw value the same id (np.savez's bytes would not do: its zip entries carry the time)."""
    h = hashlib.sha256()
    for name, values in zip(names, vocabs):
        h.update(f"{name}\0{len(values)}\0".encode())
        if values.dtype == object:
            h.update(b"bytes\0" + np.array([len(v) for v in values], dtype="<i8").tobytes() + b"".join(values))
        else:
            h.update(b"int\0" + np.asarray(values, dtype="<i8").tobytes())
    return "sha256:" + h.hexdigest()


def load_vocabs(path, names: list[str]) -> list[np.ndarray]:
    """Sorted value arrays of `names` from a vocab.npz; a missing field is an error naming the file."""
    with np.load(path, allow_pickle=False) as z:
        missing = [n for n in names if n not in z.files and f"{n}.bytes" not in z.files]
        if missing:
            raise ValueError(f"{path}: no vocabulary for field(s) {missing}; was it made for another dataset?")
        out = []
        for n in names:
            if n in z.files:
                values = z[n]
                if values.dtype.kind == "U":                     # an older file: text -> UTF-8 bytes
                    values = _object_array([v.encode("utf-8", "surrogateescape") for v in values])
            else:
                blob, offsets = z[f"{n}.bytes"].tobytes(), z[f"{n}.offsets"]
                values = _object_array([blob[a:b] for a, b in zip(offsets[:-1], offsets[1:])])
            out.append(values)
        return out


def _object_array(items: list) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


# ---- fast path for int64 values: an open-addressing hash table (same ids as encode) ---------------------

_EMPTY = np.iinfo(np.int64).min
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(cache=True)
def _slot(x, bits):
    return np.int64((np.uint64(x) * _GOLDEN) >> np.uint64(64 - bits))


@numba.njit(cache=True)
def _build_table(values, bits):
    size = 1 << bits
    keys = np.full(size, _EMPTY, dtype=np.int64)
    ids = np.zeros(size, dtype=np.int32)
    mask = size - 1
    for i in range(values.shape[0]):
        s = _slot(values[i], bits)
        while keys[s] != _EMPTY:
            s = (s + 1) & mask
        keys[s] = values[i]
        ids[s] = i
    return keys, ids


@numba.njit(cache=True, nogil=True)  # fields are encoded by two threads (preprocess.py)
def _lookup(col, keys, ids, bits, oov, out):
    mask = (1 << bits) - 1
    for i in range(col.shape[0]):
        x = col[i]
        s = _slot(x, bits)
        out[i] = oov
        while keys[s] != _EMPTY:
            if keys[s] == x:
                out[i] = ids[s]
                break
            s = (s + 1) & mask


class IntEncoder:
    """encode() for a sorted int64 vocabulary by hashing: O(1) per value instead of a binary search.

    Oracle: encode(col, values); tests hold the two equal.
    """

    def __init__(self, values: np.ndarray):
        self.values = np.ascontiguousarray(values, dtype=np.int64)
        self.bits = max(4, int(2 * len(self.values)).bit_length())  # load factor <= 1/2
        self.keys, self.ids = _build_table(self.values, self.bits)

    def __call__(self, col: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Ids (n,) int32 of int64 col (n,); unknown -> OOV = len(values). Writes into out if given."""
        if out is None:
            out = np.empty(len(col), dtype=np.int32)
        _lookup(col, self.keys, self.ids, self.bits, len(self.values), out)
        return out
