"""Raw Criteo / Avazu file -> dataset directory (meta.json + shards + vocab.npz), streaming.

Symbols: N good rows in the file, n rows of a chunk, F sparse fields, D dense features.

Design: two streaming passes over the file, in chunks of whole lines (64 MiB by default), so memory
is one chunk plus the vocabularies, never the file.
  check   options, the input, and where the output may go (outdir.py), before any work.
  pass 1  tokenize every chunk; count the distinct values of every categorical field
          (vocab.ValueCounter), the min/max of every dense column, the number of good rows, and
          the sha256 of the bytes; report bad lines (fail: raise at the first; skip: count them).
  plan    vocabularies (sorted, min_count, OOV id last); dense transform parameters; which good
          rows go to train / valid / test (splits.py).
  pass 2  tokenize again, encode ids, transform dense values, and stream each row to its split's
          shards (writer.DatasetWriter: temp dir, meta.json last, atomic rename). The input must be
          the same file, unchanged, as in pass 1 (chunks.FileIdentity), or nothing is published.
Re-tokenizing costs less than spilling parsed rows to disk and back (the tokenizer runs at the
speed of reading the page cache), and keeps no temporary files.

Criteo is tokenized by the Numba kernel in tokenize.py (criteo_format.py), Avazu by Python's
bytes.split per line (avazu_format.py; about 10x slower, lossless, not tuned).

Reference semantics (bytedance/LargeBatchCTR data_utils.py): categorical missing -> "-1" and
LabelEncoder ids (sorted values), dense missing -> 0 then MinMaxScaler over the whole file; split
`rand` takes ceil(frac * N) test rows at random (10% Criteo, 20% Avazu; seeded here), `seq`
(Criteo) keeps the first int((1 - 1/7) N) rows for training. Ids equal the reference exactly with
the defaults; vocab_size is one more than the reference's class count because of the OOV id.

Bad lines (wrong column count, label not 0/1, non-numeric or out-of-range dense value, malformed
categorical value, a last line cut off without its newline, empty file) never become rows:
--on-error fail raises PreprocessError naming file, line and column; skip drops them, prints
counts and the first line numbers, and records them in meta.json "errors".
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from dataio.avazu_format import AVAZU_SPARSE, AvazuTokenizer
from dataio.chunks import FileIdentity, iter_line_chunks
from dataio.criteo_format import (CRITEO_DENSE, CRITEO_SPARSE, FORMAT_HINT as CRITEO_HINT, CriteoTokenizer,
                                  criteo_tokenizer)
from dataio.errors import ErrorLog, PreprocessError
from dataio.meta import MetaError, load_meta
from dataio.outdir import check_out_dir, cleanup_on_terminate
from dataio.splits import SPLIT_NAMES, assign_splits
from dataio.transforms import (DENSE_TRANSFORMS, bucket_x4, dense_transform_meta, log_apply, minmax_apply,
                               minmax_params)
from dataio.vocab import (IntEncoder, ValueCounter, encode, keep_frequent, load_vocabs, reference_order, save_vocabs,
                          vocab_digest)
from dataio.writer import DEFAULT_SHARD_ROWS, DatasetWriter

__all__ = ["preprocess", "Options", "PreprocessError", "CRITEO_DENSE", "CRITEO_SPARSE", "AVAZU_SPARSE"]

RAND_TEST_FRACTION = {"criteo": 0.1, "avazu": 0.2}
DATASET_NAMES = {"criteo": "criteo", "criteo_kaggle": "criteo", "avazu": "avazu"}   # the reference's names too
PRESETS = {"criteo_x4": {"min_count": 10, "dense_transform": "bucket_x4", "split": "x4"}}
VOCAB_FILE = "vocab.npz"
CRLF_TEXT = ("line ends with CR LF (Windows line ends); both formats are read with LF line ends: convert the file "
             "(dos2unix FILE, or tr -d '\\r' < FILE > NEW) and preprocess it again")
CHUNK_BYTES = 64 << 20


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
    valid_fraction: float = 0.0

    @property
    def test_fraction(self) -> float:
        return RAND_TEST_FRACTION[self.dataset]


# ---- checks before any work -------------------------------------------------------------------------

def _resolve_options(opts: Options) -> Options:
    """Apply the preset and check every option; errors name the option."""
    opts.dataset = DATASET_NAMES.get(str(opts.dataset).lower(), opts.dataset)
    if opts.dataset not in ("criteo", "avazu"):
        raise PreprocessError(f"--dataset must be one of {', '.join(DATASET_NAMES)}, got {opts.dataset!r}")
    if opts.split == "none":
        if opts.vocab_from is None:
            raise PreprocessError("--split none: writes a file to score with a run's vocabularies; give "
                                  "--vocab-from with the run's dataset directory")
        if opts.valid_fraction or opts.preset:
            raise PreprocessError("--split none: every row goes to the one split 'all'; drop --valid-fraction "
                                  "and --preset")
        return _check_rest(opts)
    if opts.preset is not None:
        if opts.preset not in PRESETS or opts.dataset != "criteo":
            raise PreprocessError(f"--preset {opts.preset}: not defined for {opts.dataset} (have: criteo_x4 for "
                                  f"criteo)")
        if opts.valid_fraction:
            raise PreprocessError("--valid-fraction: the criteo_x4 preset already makes its own valid split")
        for k, v in PRESETS[opts.preset].items():
            setattr(opts, k, v)
    if opts.split == "seq" and opts.dataset != "criteo":
        raise PreprocessError("--split seq: defined for criteo only (as in the reference); use --split rand")
    if opts.split not in ("rand", "seq", "x4"):
        raise PreprocessError(f"--split must be rand, seq or none, got {opts.split!r}")
    if not 0.0 <= opts.valid_fraction < 1.0 - opts.test_fraction:
        raise PreprocessError(f"--valid-fraction must be in [0, {1 - opts.test_fraction:g}) so that train keeps "
                              f"rows, got {opts.valid_fraction!r}")
    if opts.valid_fraction and opts.split != "rand":
        raise PreprocessError("--valid-fraction: needs --split rand")
    return _check_rest(opts)


def _check_rest(opts: Options) -> Options:
    if opts.on_error not in ("fail", "skip"):
        raise PreprocessError(f"--on-error must be fail or skip, got {opts.on_error!r}")
    if opts.dense_transform not in DENSE_TRANSFORMS + ("bucket_x4",):
        raise PreprocessError(f"--dense-transform must be one of {DENSE_TRANSFORMS}, got {opts.dense_transform!r}")
    for name, value, low in (("--shard-rows", opts.shard_rows, 1), ("--seed", opts.seed, 0),
                             ("--min-count", opts.min_count, 1), ("chunk_bytes", opts.chunk_bytes, 1)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise PreprocessError(f"{name} must be an integer >= {low}, got {value!r}")
    return opts


def _vocab_source(opts: Options, dense_transform_given: bool) -> dict | None:
    """meta.json of --vocab-from, checked against this run; its dense transform becomes ours."""
    if opts.vocab_from is None:
        return None
    src = Path(opts.vocab_from)
    try:
        old = load_meta(src)
    except MetaError as e:
        raise PreprocessError(f"--vocab-from: {e}") from e
    if old["kind"] != opts.dataset:
        raise PreprocessError(f"--vocab-from {src}: a {old['kind']} dataset, this is {opts.dataset}; use a "
                              f"dataset preprocessed from the same kind of file")
    if not (src / VOCAB_FILE).is_file():
        raise PreprocessError(f"--vocab-from {src}: has no {VOCAB_FILE}")
    transform = old["options"].get("dense_transform", "minmax")
    if dense_transform_given and opts.dense_transform != transform:
        raise PreprocessError(f"--dense-transform {opts.dense_transform}: --vocab-from {src} was made with "
                              f"{transform}; the new data must be encoded the same way (leave the option out)")
    opts.dense_transform = transform
    return old


def _check_input(path: Path) -> None:
    if not path.is_file():
        raise PreprocessError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise PreprocessError(f"{path}: empty file")
    with open(path, "rb") as f:
        first = f.readline(1 << 16)
    if first.endswith(b"\r\n"):   # a CR would end the last field's value: every id of that field changes
        raise PreprocessError(f"{path}:1: {CRLF_TEXT}")


# ---- pass 1: count -----------------------------------------------------------------------------------

@dataclass
class Counts:
    """What pass 1 learns about the file."""
    counters: list            # [F] ValueCounter
    col_min: np.ndarray       # (D,)
    col_max: np.ndarray       # (D,)
    rows: int
    errors: ErrorLog
    sha256: str


def count_pass(path: Path, tokenizer, opts: Options, num_sparse: int, num_dense: int,
               field_pool: ThreadPoolExecutor, identity: FileIdentity) -> Counts:
    hint = CRITEO_HINT if opts.dataset == "criteo" else ""
    errors = ErrorLog(path, opts.on_error, format_hint=hint)
    counters = [ValueCounter() for _ in range(num_sparse)]
    col_min = np.full(num_dense, np.inf)
    col_max = np.full(num_dense, -np.inf)
    hasher = hashlib.sha256()
    rows = 0
    for buf, first_line, at_eof in iter_line_chunks(path, opts.chunk_bytes, hasher, tokenizer.header_lines,
                                                    max_bytes=identity.size):
        label, dense, sparse = tokenizer(buf, first_line, at_eof, errors)
        rows += len(label)
        if opts.dense_transform == "bucket_x4":
            sparse = list(bucket_x4(dense).T) + sparse
        # fields are independent; NumPy's sort releases the GIL, so two threads count two fields
        list(field_pool.map(ValueCounter.add, counters, sparse))
        if num_dense and len(label):
            col_min = np.minimum(col_min, dense.min(axis=0))
            col_max = np.maximum(col_max, dense.max(axis=0))
    if rows == 0:
        raise PreprocessError(f"{path}: no valid rows" + (f" ({errors.count} bad lines skipped)" if errors.count
                                                           else " (empty file)"))
    if errors.count:
        print(f"{path}: skipped {errors.count} bad lines {errors.by_kind}; first: "
              + ", ".join(f"line {e['line']} ({e['column']}: {e['error']})" for e in errors.first),
              file=sys.stderr)
    return Counts(counters, col_min, col_max, rows, errors, hasher.hexdigest())


# ---- pass 2: encode and write --------------------------------------------------------------------------

def encode_pass(path: Path, tokenizer, opts: Options, writer: DatasetWriter, vocabs: list, dense_params,
                assign: np.ndarray, field_pool: ThreadPoolExecutor, identity: FileIdentity) -> None:
    """Encode every good row again and append it to its split (assign (N,)); dense_params (scale, offset)."""
    encoders = [IntEncoder(v) if v.dtype == np.int64 else v for v in vocabs]
    num_sparse = len(vocabs)
    done = 0
    for buf, first_line, at_eof in iter_line_chunks(path, opts.chunk_bytes, None, tokenizer.header_lines,
                                                    max_bytes=identity.size):
        label, dense, sparse = tokenizer(buf, first_line, at_eof, None)
        n = len(label)
        if done + n > len(assign):
            raise PreprocessError(f"{path}: more rows in pass 2 than in pass 1 (the input changed while being "
                                  f"read); nothing was written")
        if opts.dense_transform == "bucket_x4":
            sparse = list(bucket_x4(dense).T) + sparse
        ids = np.empty((n, num_sparse), dtype=np.int32)

        def encode_field(f, col, enc):
            if isinstance(enc, IntEncoder) and col.dtype == np.int64:
                enc(col, ids[:, f])  # a nogil Numba lookup
            else:
                ids[:, f] = encode(col, enc.values if isinstance(enc, IntEncoder) else enc)

        list(field_pool.map(encode_field, range(len(sparse)), sparse, encoders))
        x = _transform_dense(dense, opts.dense_transform, dense_params)
        y = label.astype(np.float32)
        where = assign[done:done + n]
        for code, name in enumerate(SPLIT_NAMES):
            if name in writer.sinks:
                rows = where == code
                writer.append(name, ids[rows], x[rows], y[rows])
        done += n


def _transform_dense(dense: np.ndarray, kind: str, params) -> np.ndarray:
    """dense (n, D) float64 -> (n, D) float32 (D = 0 when the dense fields became categorical)."""
    if params is None:
        return np.empty((len(dense), 0), dtype=np.float32)
    if kind == "minmax":
        return minmax_apply(dense, *params)
    if kind == "log":
        return log_apply(dense)
    return dense.astype(np.float32)


# ---- the whole job --------------------------------------------------------------------------------------

def preprocess(dataset: str, input_path: str | os.PathLike, out_dir: str | os.PathLike, *, split: str = "rand",
               seed: int = 0, min_count: int = 1, dense_transform: str | None = None, preset: str | None = None,
               on_error: str = "fail", vocab_from: str | os.PathLike | None = None,
               shard_rows: int = DEFAULT_SHARD_ROWS, chunk_bytes: int = CHUNK_BYTES, valid_fraction: float = 0.0,
               verbose: bool = False) -> Path:
    """Preprocess a raw Criteo train.txt (TSV) or Avazu train (CSV) file into out_dir; returns out_dir.

    dense_transform None: minmax, or the transform of the --vocab-from dataset.
    """
    opts = _resolve_options(Options(dataset, split, seed, min_count, dense_transform or "minmax", preset, on_error,
                                    None if vocab_from is None else str(vocab_from), shard_rows, chunk_bytes,
                                    float(valid_fraction)))
    source = _vocab_source(opts, dense_transform is not None)
    path = Path(input_path)
    _check_input(path)
    out_real = check_out_dir(out_dir, inputs=(path,))
    t0 = time.perf_counter()
    tokenizer = criteo_tokenizer(path) if opts.dataset == "criteo" else AvazuTokenizer(path)
    bucketize = opts.dense_transform == "bucket_x4"
    sparse_names = (CRITEO_DENSE if bucketize else []) + (CRITEO_SPARSE if opts.dataset == "criteo" else AVAZU_SPARSE)
    dense_names = [] if (bucketize or opts.dataset == "avazu") else CRITEO_DENSE
    identity = FileIdentity.of(path)

    with ThreadPoolExecutor(2) as field_pool:  # per-field work of a chunk, two fields at a time
        counts = count_pass(path, tokenizer, opts, len(sparse_names), len(dense_names), field_pool, identity)
        identity.check_unchanged(path, "between pass 1 and pass 2")

        # plan: vocabularies, dense parameters, split assignment
        col_min, col_max = counts.col_min, counts.col_max
        if source is not None:
            try:
                vocabs = load_vocabs(Path(opts.vocab_from) / VOCAB_FILE, sparse_names)
            except ValueError as e:
                raise PreprocessError(f"--vocab-from: {e}") from e
            if dense_names and opts.dense_transform == "minmax":
                col_min = np.array([d["transform"]["min"] for d in source["dense_features"]])
                col_max = np.array([d["transform"]["max"] for d in source["dense_features"]])
        else:
            vocabs = [reference_order(keep_frequent(*c.result(), opts.min_count)) for c in counts.counters]
        dense_params = minmax_params(col_min, col_max) if dense_names else None
        assign, split_rows = assign_splits(counts.rows, opts.split, opts.seed, opts.test_fraction,
                                           opts.valid_fraction)

        with DatasetWriter(out_real, split_rows, len(sparse_names), len(dense_names),
                           shard_rows=opts.shard_rows) as writer:
            encode_pass(path, tokenizer, opts, writer, vocabs, dense_params, assign, field_pool, identity)
            identity.check_unchanged(path, "during pass 2")
            meta = {
                "kind": opts.dataset,
                "sparse_features": [{"name": nm, "vocab_size": len(v) + 1, "oov_id": len(v),
                                     "value_type": "int" if v.dtype.kind in "iu" else "str"}
                                    for nm, v in zip(sparse_names, vocabs)],
                "dense_features": dense_transform_meta(opts.dense_transform, dense_names, col_min, col_max),
                "source": {"path": str(path.resolve()), "bytes": identity.size, "sha256": counts.sha256},
                "options": {**opts.__dict__},
                "errors": counts.errors.summary(),
                "vocab_file": VOCAB_FILE,
                "vocab_digest": vocab_digest(sparse_names, vocabs),   # what the ids mean (evaluate compares it)
            }
            out = writer.finish(meta, {VOCAB_FILE: save_vocabs(sparse_names, vocabs)})
    if verbose:
        dt = time.perf_counter() - t0
        print(f"{path}: {counts.rows} rows -> {out} {split_rows} in {dt:.1f} s "
              f"({counts.rows / dt:,.0f} rows/s, {identity.size / dt / 1e6:.1f} MB/s)")
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dataset", required=True, type=click.Choice(list(DATASET_NAMES), case_sensitive=False),
              help="criteo (= the reference's criteo_kaggle; train.txt, or DeepCTR's CSV with a header) or avazu")
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="new directory, empty directory, or a dataset written by this tool (replaced)")
@click.option("--split", default="rand", show_default=True, type=click.Choice(["rand", "seq", "none"]),
              help="rand | seq (the reference's); none: every row, in file order, into one split 'all' to score "
                   "(needs --vocab-from; then engine.evaluate --data OUT --split all)")
@click.option("--valid-fraction", default=0.0, show_default=True, type=click.FloatRange(0.0, 1.0, max_open=True),
              help="with --split rand: also a valid split of ceil(F N) rows, taken from the train rows")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--min-count", default=1, show_default=True, type=click.IntRange(min=1),
              help="values seen fewer times map to the OOV id")
@click.option("--dense-transform", default=None, type=click.Choice(list(DENSE_TRANSFORMS)),
              help="default minmax (or that of --vocab-from)")
@click.option("--preset", default=None, type=click.Choice(["criteo_x4"]),
              help="criteo_x4: min count 10, dense -> floor(ln(x)^2) buckets as categorical, random 8:1:1")
@click.option("--on-error", default="fail", show_default=True, type=click.Choice(["fail", "skip"]))
@click.option("--vocab-from", default=None, type=click.Path(exists=True, file_okay=False),
              help="encode with the vocabularies, dense transform and ranges of this dataset directory")
@click.option("--shard-rows", default=DEFAULT_SHARD_ROWS, show_default=True, type=click.IntRange(min=1))
def main(dataset, input_path, out_dir, split, valid_fraction, seed, min_count, dense_transform, preset, on_error,
         vocab_from, shard_rows) -> None:
    """Preprocess a raw Criteo/Avazu file into a sharded dataset directory."""
    try:
        with cleanup_on_terminate():
            preprocess(dataset, input_path, out_dir, split=split, seed=seed, min_count=min_count,
                       dense_transform=dense_transform, preset=preset, on_error=on_error, vocab_from=vocab_from,
                       shard_rows=shard_rows, valid_fraction=valid_fraction, verbose=True)
    except PreprocessError as e:
        raise click.ClickException(str(e)) from e
    except OSError as e:   # disk full, permissions: the old dataset (if any) is still in place
        raise click.ClickException(f"{e.filename or input_path}: {e.strerror or e}; nothing was published") from e


if __name__ == "__main__":
    main()
