"""Raw Criteo / Avazu file -> dataset directory (meta.json + shards + vocab.npz), streaming.

Symbols: N good rows in the file, n rows of a chunk, F sparse fields, D dense features.

Design: two streaming passes over the file, in chunks of whole lines (64 MiB by default), so memory
is one chunk plus the vocabularies, never the file.
  pass 1  tokenize every chunk; count the distinct values of every categorical field
          (vocab.ValueCounter), the min/max of every dense column, the number of good rows, and
          the sha256 of the bytes; report bad lines (fail: raise at the first; skip: count them).
  plan    vocabularies (sorted, min_count, OOV id last); dense transform parameters; which good
          rows go to train / valid / test (a seeded assignment array, N bytes).
  pass 2  tokenize again, encode ids by binary search in the vocabularies, transform dense
          values, and stream each row to its split's shards (writer.DatasetWriter: temp dir,
          meta.json last, atomic rename).
Re-tokenizing costs less than spilling parsed rows to disk and back (the tokenizer runs at the
speed of reading the page cache), and keeps no temporary files.

Criteo is tokenized by the Numba kernel in tokenize.py (the fast path). Avazu is tokenized with
Python's str.split per line (about 10x slower; fine for its 40M rows, not tuned).

Reference semantics (bytedance/LargeBatchCTR data_utils.py): categorical missing -> "-1" and
LabelEncoder ids (sorted values), dense missing -> 0 then MinMaxScaler over the whole file; split
`rand` takes ceil(frac * N) test rows at random (10% Criteo, 20% Avazu; seeded here), `seq`
(Criteo) keeps the first int((1 - 1/7) N) rows for training. Ids equal the reference exactly with
the defaults; vocab_size is one more than the reference's class count because of the OOV id.

Bad lines (wrong column count, label not 0/1, non-numeric dense value, malformed categorical
value, a last line cut off without its newline, empty file) never become rows: --on-error fail
raises PreprocessError naming file, line and column; skip drops them, prints counts and the first
line numbers, and records them in meta.json "errors".
"""
from __future__ import annotations

import hashlib
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import click
import numpy as np

from dataio import tokenize as tk
from dataio.meta import load_meta
from dataio.transforms import (bucket_x4, dense_transform_meta, log_apply, minmax_apply, minmax_params)
from dataio.vocab import IntEncoder, ValueCounter, encode, keep_frequent, load_vocabs, reference_order, save_vocabs
from dataio.writer import DEFAULT_SHARD_ROWS, DatasetWriter

CRITEO_DENSE = [f"I{i}" for i in range(1, 14)]
CRITEO_SPARSE = [f"C{i}" for i in range(1, 27)]
AVAZU_SPARSE = ["hour", "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id", "app_domain",
                "app_category", "device_id", "device_ip", "device_model", "device_type", "device_conn_type",
                "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21"]
RAND_TEST_FRACTION = {"criteo": 0.1, "avazu": 0.2}
PRESETS = {"criteo_x4": {"min_count": 10, "dense_transform": "bucket_x4", "split": "x4"}}
VOCAB_FILE = "vocab.npz"
CHUNK_BYTES = 64 << 20


class PreprocessError(ValueError):
    """Bad input: the message names the file, the line and the column."""


# ---- reading whole lines in chunks ------------------------------------------------------------------

def iter_line_chunks(path: Path, chunk_bytes: int, hasher=None, skip_lines: int = 0
                     ) -> Iterator[tuple[np.ndarray, int, bool]]:
    """Yield (bytes uint8 of whole lines, number of its first line (1-based), is_last) over the file.

    The last chunk may end with a line without newline; the tokenizer flags that as truncated.
    skip_lines leading lines (a header) are not yielded, but are counted in line numbers.
    """
    line = 1
    leftover = b""
    # sha256 runs in a helper thread (hashlib releases the GIL), overlapping the tokenizer.
    pool = ThreadPoolExecutor(1) if hasher is not None else None
    pending = None
    with open(path, "rb") as f, _finally_wait(pool, lambda: pending):
        while True:
            block = f.read(chunk_bytes)
            if pool is not None:
                if pending is not None:
                    pending.result()
                pending = pool.submit(hasher.update, block)
                if not block:
                    pending.result()
                    pool.shutdown()
            at_eof = f.peek(1) == b""
            data = leftover + block
            if at_eof:
                whole, leftover = data, b""
            else:
                cut = data.rfind(b"\n") + 1
                if cut == 0:           # no newline yet: a line longer than a chunk
                    leftover = data
                    continue
                whole, leftover = data[:cut], data[cut:]
            while skip_lines and whole:
                nl = whole.find(b"\n")
                whole = whole[nl + 1:] if nl >= 0 else b""
                skip_lines -= 1
                line += 1
            if whole:
                yield np.frombuffer(whole, dtype=np.uint8), line, at_eof
                line += whole.count(b"\n")
            if at_eof:
                return


class _finally_wait:
    """On leaving the read loop, wait for the last hash update so the digest covers every byte."""

    def __init__(self, pool, get_pending):
        self.pool, self.get_pending = pool, get_pending

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            if self.get_pending() is not None:
                self.get_pending().result()
            self.pool.shutdown()


# ---- error log ---------------------------------------------------------------------------------------

@dataclass
class ErrorLog:
    """Bad lines found in pass 1: raise at the first (fail) or count them (skip)."""
    path: Path
    mode: str
    count: int = 0
    by_kind: dict = field(default_factory=dict)
    first: list = field(default_factory=list)
    keep_first: int = 10

    def add(self, line: int, message: str, column: str) -> None:
        where = f"{self.path}:{line}: column {column}: {message}"
        if self.mode == "fail":
            raise PreprocessError(f"{where} (use --on-error skip to drop bad lines)")
        self.count += 1
        self.by_kind[message] = self.by_kind.get(message, 0) + 1
        if len(self.first) < self.keep_first:
            self.first.append({"line": int(line), "column": column, "error": message})

    def summary(self) -> dict:
        return {"skipped_lines": self.count, "by_kind": self.by_kind, "first": self.first}


# ---- tokenizers: chunk -> (label (n,), dense (n, D) float64, sparse columns [F] of (n,)) ---------------

class _CriteoPart:
    """Parses one run of whole lines into buffers it reuses across chunks."""

    def __init__(self):
        self.capacity = 0

    def _buffers(self, n: int):
        # Reused across chunks: fresh 50 MB arrays per chunk cost more in page faults than parsing.
        if n > self.capacity:
            self.capacity = n
            self.out = (np.empty(n, dtype=np.int8), np.empty((n, tk.NUM_DENSE), dtype=np.float64),
                        np.empty((n, tk.NUM_SPARSE), dtype=np.int64), np.empty(n, dtype=np.int64),
                        np.empty(n, dtype=np.int32), np.empty(n, dtype=np.int32))
        return self.out

    def __call__(self, buf: np.ndarray, first_line: int, at_eof: bool):
        """-> (label, dense, codes, [(line, code, column) of bad lines]); views valid until the next call."""
        n = int(np.count_nonzero(buf == 10)) + 1
        label, dense, codes, err_line, err_code, err_col = self._buffers(n)
        rows, n_err, _ = tk.parse_criteo(buf, first_line, at_eof, label, dense, codes, err_line, err_code, err_col)
        bad = [(int(err_line[i]), int(err_code[i]), int(err_col[i])) for i in range(n_err)]
        return label[:rows], dense[:rows], codes[:rows], bad


class CriteoTokenizer:
    """Criteo chunk -> arrays. A chunk is cut at a newline near its middle and the two halves are
    parsed by two threads (the Numba tokenizer releases the GIL), then joined in order."""
    columns = CRITEO_DENSE + CRITEO_SPARSE
    header_lines = 0
    split_bytes = 1 << 20  # smaller chunks are parsed by one thread

    def __init__(self, path: Path):
        self.path = path
        self.parts = (_CriteoPart(), _CriteoPart())
        self.pool = ThreadPoolExecutor(2)

    def __call__(self, buf: np.ndarray, first_line: int, at_eof: bool, errors: ErrorLog | None):
        """Views into reused buffers (or fresh joined arrays): valid until the next call."""
        middle = len(buf) // 2
        newline = np.flatnonzero(buf[middle:] == 10)
        if len(buf) < self.split_bytes or len(newline) < 2:  # small chunk: one thread
            jobs = [(buf, first_line, at_eof)]
        else:
            cut = middle + int(newline[0]) + 1            # the first half ends with its newline
            head = buf[:cut]
            jobs = [(head, first_line, False),
                    (buf[cut:], first_line + int(np.count_nonzero(head == 10)), at_eof)]
        results = list(self.pool.map(lambda part, job: part(*job), self.parts, jobs))
        if errors is not None:
            for _, _, _, bad in results:
                for line, code, column in bad:
                    errors.add(line, tk.ERROR_TEXT[code], tk.column_name(column))
        if len(results) == 1:
            label, dense, codes, _ = results[0]
        else:
            label, dense, codes = (np.concatenate([r[i] for r in results]) for i in range(3))
        return label, dense, [codes[:, f] for f in range(tk.NUM_SPARSE)]


class AvazuTokenizer:
    header_lines = 1

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as f:
            header = f.readline().decode("utf-8", "replace").rstrip("\r\n").split(",")
        if header == [""]:
            raise PreprocessError(f"{path}: empty file")
        need = ["id", "click"] + AVAZU_SPARSE
        missing = [c for c in need if c not in header]
        if missing:
            raise PreprocessError(f"{path}:1: header lacks column(s) {missing}; is this Avazu's train file?")
        self.header = header
        self.label_at = header.index("click")
        self.sparse_at = [header.index(c) for c in AVAZU_SPARSE]
        self.columns = AVAZU_SPARSE

    def __call__(self, buf: np.ndarray, first_line: int, at_eof: bool, errors: ErrorLog | None):
        lines = buf.tobytes().decode("utf-8", "replace").split("\n")
        truncated = lines[-1] != ""
        if not truncated:
            lines.pop()
        ncol = len(self.header)
        good = []
        for i, text in enumerate(lines):
            parts = text.split(",")
            if len(parts) != ncol:
                bad = ("wrong number of columns", f"#{len(parts)} (want {ncol})")
            elif parts[self.label_at] not in ("0", "1"):
                bad = ("label is not 0 or 1", "click")
            elif truncated and at_eof and i == len(lines) - 1:
                bad = (tk.ERROR_TEXT[tk.ERR_TRUNCATED], self.header[-1])
            else:
                good.append(parts)
                continue
            if errors is not None:
                errors.add(first_line + i, *bad)
        if not good:
            empty = np.empty(0, dtype=str)
            return np.empty(0, np.int8), np.empty((0, 0)), [empty for _ in self.sparse_at]
        cols = list(zip(*good))
        label = np.array(cols[self.label_at], dtype=np.int8)
        # Missing categorical -> "-1", the reference's fillna("-1").
        sparse = [np.array([v if v else "-1" for v in cols[j]]) for j in self.sparse_at]
        return label, np.empty((len(good), 0)), sparse


# ---- the two passes --------------------------------------------------------------------------------

@dataclass
class Options:
    dataset: str
    split: str = "rand"
    seed: int = 0
    min_count: int = 1
    dense_transform: str = "minmax"
    preset: str | None = None
    on_error: str = "fail"
    vocab_from: str | None = None
    shard_rows: int = DEFAULT_SHARD_ROWS
    chunk_bytes: int = CHUNK_BYTES


def preprocess(dataset: str, input_path: str | os.PathLike, out_dir: str | os.PathLike, *, split: str = "rand",
               seed: int = 0, min_count: int = 1, dense_transform: str = "minmax", preset: str | None = None,
               on_error: str = "fail", vocab_from: str | os.PathLike | None = None,
               shard_rows: int = DEFAULT_SHARD_ROWS, chunk_bytes: int = CHUNK_BYTES, verbose: bool = False) -> Path:
    """Preprocess a raw Criteo train.txt (TSV) or Avazu train (CSV) file into out_dir; returns out_dir."""
    opts = Options(dataset, split, seed, min_count, dense_transform, preset, on_error,
                   None if vocab_from is None else str(vocab_from), shard_rows, chunk_bytes)
    if preset is not None:
        if preset not in PRESETS or dataset != "criteo":
            raise ValueError(f"unknown preset {preset!r} for {dataset} (have: criteo_x4 for criteo)")
        for k, v in PRESETS[preset].items():
            setattr(opts, k, v)
    if dataset not in ("criteo", "avazu"):
        raise ValueError(f"dataset must be criteo or avazu, got {dataset!r}")
    if opts.split == "seq" and dataset != "criteo":
        raise ValueError("split 'seq' is defined for criteo only (as in the reference)")
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be fail or skip, got {on_error!r}")
    path = Path(input_path)
    if not path.is_file():
        raise PreprocessError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise PreprocessError(f"{path}: empty file")
    t0 = time.perf_counter()
    tokenizer = CriteoTokenizer(path) if dataset == "criteo" else AvazuTokenizer(path)
    bucketize = opts.dense_transform == "bucket_x4"
    sparse_names = (CRITEO_DENSE if bucketize else []) + \
        (CRITEO_SPARSE if dataset == "criteo" else AVAZU_SPARSE)
    dense_names = [] if (bucketize or dataset == "avazu") else CRITEO_DENSE

    field_pool = ThreadPoolExecutor(2)  # per-field work of a chunk, two fields at a time
    # pass 1: counts, dense range, bad lines, checksum
    errors = ErrorLog(path, on_error)
    counters = [ValueCounter() for _ in sparse_names]
    col_min = np.full(len(dense_names), np.inf)
    col_max = np.full(len(dense_names), -np.inf)
    hasher = hashlib.sha256()
    n_rows = 0
    for buf, first_line, at_eof in iter_line_chunks(path, chunk_bytes, hasher, tokenizer.header_lines):
        label, dense, sparse = tokenizer(buf, first_line, at_eof, errors)
        n_rows += len(label)
        if bucketize:
            sparse = list(bucket_x4(dense).T) + sparse
        # fields are independent; NumPy's sort releases the GIL, so two threads count two fields
        list(field_pool.map(ValueCounter.add, counters, sparse))
        if dense_names and len(label):
            col_min = np.minimum(col_min, dense.min(axis=0))
            col_max = np.maximum(col_max, dense.max(axis=0))
    if n_rows == 0:
        raise PreprocessError(f"{path}: no valid rows" + (f" ({errors.count} bad lines skipped)" if errors.count
                                                           else " (empty file)"))
    if errors.count:
        print(f"{path}: skipped {errors.count} bad lines {errors.by_kind}; first: "
              + ", ".join(f"line {e['line']} ({e['column']}: {e['error']})" for e in errors.first),
              file=sys.stderr)

    # plan: vocabularies, dense parameters, split assignment
    if opts.vocab_from is not None:
        vocabs = load_vocabs(Path(opts.vocab_from) / VOCAB_FILE, sparse_names)
        old = load_meta(opts.vocab_from)
        if dense_names and opts.dense_transform == "minmax":
            col_min = np.array([d["transform"]["min"] for d in old["dense_features"]])
            col_max = np.array([d["transform"]["max"] for d in old["dense_features"]])
    else:
        vocabs = []
        for counter in counters:
            values, counts = counter.result()
            kept = keep_frequent(values, counts, opts.min_count)
            vocabs.append(reference_order(kept))
    scale, offset = minmax_params(col_min, col_max) if dense_names else (None, None)
    assign, split_rows = _assign_splits(n_rows, dataset, opts)

    # pass 2: encode and write
    encoders = [IntEncoder(v) if v.dtype == np.int64 else v for v in vocabs]
    with DatasetWriter(out_dir, split_rows, len(sparse_names), len(dense_names), shard_rows=shard_rows) as writer:
        done = 0
        for buf, first_line, at_eof in iter_line_chunks(path, chunk_bytes, None, tokenizer.header_lines):
            label, dense, sparse = tokenizer(buf, first_line, at_eof, None)
            n = len(label)
            if bucketize:
                sparse = list(bucket_x4(dense).T) + sparse
            ids = np.empty((n, len(sparse_names)), dtype=np.int32)

            def encode_field(f, col, enc):
                if isinstance(enc, IntEncoder) and col.dtype == np.int64:
                    enc(col, ids[:, f])  # a nogil Numba lookup
                else:
                    ids[:, f] = encode(col, enc.values if isinstance(enc, IntEncoder) else enc)

            list(field_pool.map(encode_field, range(len(sparse)), sparse, encoders))
            if not dense_names:
                x = np.empty((n, 0), dtype=np.float32)
            elif opts.dense_transform == "minmax":
                x = minmax_apply(dense, scale, offset)
            elif opts.dense_transform == "log":
                x = log_apply(dense)
            else:
                x = dense.astype(np.float32)
            y = label.astype(np.float32)
            where = assign[done:done + n]
            for code, name in enumerate(("train", "valid", "test")):
                if name in split_rows:
                    rows = where == code
                    writer.append(name, ids[rows], x[rows], y[rows])
            done += n
        meta = {
            "kind": dataset,
            "sparse_features": [{"name": nm, "vocab_size": len(v) + 1, "oov_id": len(v),
                                 "value_type": "int" if v.dtype.kind in "iu" else "str"}
                                for nm, v in zip(sparse_names, vocabs)],
            "dense_features": dense_transform_meta(opts.dense_transform, dense_names, col_min, col_max),
            "source": {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": hasher.hexdigest()},
            "options": {**opts.__dict__},
            "errors": errors.summary(),
            "vocab_file": VOCAB_FILE,
        }
        out = writer.finish(meta, {VOCAB_FILE: save_vocabs(sparse_names, vocabs)})
    field_pool.shutdown()
    if verbose:
        dt = time.perf_counter() - t0
        print(f"{path}: {n_rows} rows -> {out} {split_rows} in {dt:.1f} s "
              f"({n_rows / dt:,.0f} rows/s, {path.stat().st_size / dt / 1e6:.1f} MB/s)")
    return out


def _assign_splits(n: int, dataset: str, opts: Options) -> tuple[np.ndarray, dict[str, int]]:
    """assign (N,) int8: 0 train, 1 valid, 2 test, and rows per split."""
    assign = np.zeros(n, dtype=np.int8)
    if opts.split == "seq":
        assign[int((1 - 1 / 7) * n):] = 2
    elif opts.split == "rand":
        n_test = math.ceil(RAND_TEST_FRACTION[dataset] * n)  # as sklearn's train_test_split(test_size=float)
        assign[np.random.default_rng(opts.seed).permutation(n)[:n_test]] = 2
    elif opts.split == "x4":                                  # random 8:1:1
        perm = np.random.default_rng(opts.seed).permutation(n)
        n_test = n_valid = int(round(0.1 * n))
        assign[perm[:n_test]] = 2
        assign[perm[n_test:n_test + n_valid]] = 1
    else:
        raise ValueError(f"split must be rand or seq, got {opts.split!r}")
    counts = np.bincount(assign, minlength=3)
    rows = {"train": int(counts[0]), "test": int(counts[2])}
    if opts.split == "x4":
        rows["valid"] = int(counts[1])
    return assign, rows


@click.command()
@click.option("--dataset", required=True, type=click.Choice(["criteo", "avazu"]))
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--split", default="rand", show_default=True, type=click.Choice(["rand", "seq"]))
@click.option("--seed", default=0, show_default=True)
@click.option("--min-count", default=1, show_default=True, help="values seen fewer times map to the OOV id")
@click.option("--dense-transform", default="minmax", show_default=True,
              type=click.Choice(["minmax", "log", "none"]))
@click.option("--preset", default=None, type=click.Choice(["criteo_x4"]),
              help="criteo_x4: min count 10, dense -> floor(ln(x)^2) buckets as categorical, random 8:1:1")
@click.option("--on-error", default="fail", show_default=True, type=click.Choice(["fail", "skip"]))
@click.option("--vocab-from", default=None, type=click.Path(exists=True, file_okay=False),
              help="encode with the vocabularies (and dense ranges) of this dataset directory")
@click.option("--shard-rows", default=DEFAULT_SHARD_ROWS, show_default=True)
def main(dataset, input_path, out_dir, split, seed, min_count, dense_transform, preset, on_error, vocab_from,
         shard_rows) -> None:
    """Preprocess a raw Criteo/Avazu file into a sharded dataset directory."""
    try:
        preprocess(dataset, input_path, out_dir, split=split, seed=seed, min_count=min_count,
                   dense_transform=dense_transform, preset=preset, on_error=on_error, vocab_from=vocab_from,
                   shard_rows=shard_rows, verbose=True)
    except PreprocessError as e:
        raise click.ClickException(str(e)) from e


if __name__ == "__main__":
    main()
