"""Criteo-shaped synthetic click data with a planted logistic model, so the best possible metrics are known.

Symbols: N rows, n rows of a chunk, F = 26 sparse fields, D = 13 dense features, K = 4 planted
embedding dim, V_f vocabulary size of field f.

Planted model (all parameters drawn from `seed`):
    logit = bias + sum_f w_f[id_f]                                 per-id effects
                 + sum_j beta_j * (ln(1 + x_j) - mu_j)              a few dense effects (j < 4)
                 + sum_{f<g} <v_f[id_f], v_g[id_g]>                 FM-like pairwise interactions
    p = sigmoid(logit),  label ~ Bernoulli(p)
The FM term is computed as 0.5 * (|sum_f v_f|^2 - sum_f |v_f|^2), i.e. square_of_sum - sum_of_squares.

Ids: field f has V_f codes (V_f log-spaced from ~10 to 3e5); code 0 is "missing" (like the reference's
"-1", which sorts first), codes 1..V_f-1 are drawn with a power law (Zipf-like) over frequency ranks,
and rank -> code is a random permutation, as hashing then sorting makes it in real Criteo. The effect
size of an id grows with its rank (w ~ N(0, (sigma * g(rank))^2), g from 0.5 at the head to 2.0 at the
tail), so the long tail carries much of the signal and memorising the head is not enough.

Dense: x = max(floor(exp(mu + sigma z)) - 1, 0), non-negative and skewed like Criteo's counts, some
missing (filled with 0). Stored min-max scaled to [0, 1] over all rows, as the reference pipeline does.

The bias is calibrated on a pilot sample so the positive rate is near 25%. Test shards store the
true p as `prob`; meta.json `bayes` holds the AUC and logloss of p on the test split.

Generation runs in chunks of CHUNK_ROWS with one random stream per (chunk, purpose), so memory is
bounded and every array is a pure function of the seed. Pass 1 draws only the dense values, to get
min/max; pass 2 draws everything and writes shards. Because a chunk depends on nothing but (seed,
chunk), `workers` threads draw chunks in parallel (NumPy's random fills, elementwise maths and
gathers release the GIL) while the main thread writes them in order: the bytes do not depend on
the number of workers, and at most 2 * workers chunks are in memory.

Vocabulary shapes: `vocab="geomspace"` (the built-in set: 26 sizes log-spaced from min_vocab to
max_vocab, shuffled across fields) or `vocab="criteo"` (the 26 cardinalities of Criteo Kaggle's
C1..C26 as DLRM counts them, 33.8M ids in all; for Criteo-sized sets, e.g. --rows 45000000).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, asdict
from pathlib import Path

import click
import numpy as np

from dataio.errors import PreprocessError
from dataio.meta import MetaError, load_meta
from dataio.outdir import check_out_dir, cleanup_on_terminate
from dataio.metrics import auc, logloss
from dataio.rawtsv import format_criteo_lines
from dataio.transforms import dense_transform_meta, minmax_apply, minmax_params
from dataio.writer import DEFAULT_SHARD_ROWS, DatasetWriter

GENERATOR_VERSION = 1
NUM_SPARSE, NUM_DENSE, EMBED_DIM = 26, 13, 4
CHUNK_ROWS = 1 << 19
SPARSE_NAMES = [f"C{i}" for i in range(1, NUM_SPARSE + 1)]
DENSE_NAMES = [f"I{i}" for i in range(1, NUM_DENSE + 1)]
_SPARSE, _DENSE, _LABEL, _PILOT, _PARAMS = range(5)  # random-stream purposes
# Criteo Kaggle (train.txt, 45.8M rows): distinct values of C1..C26, as DLRM counts them.
CRITEO_VOCAB = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27, 14992,
                5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572)
VOCAB_SHAPES = ("geomspace", "criteo")


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that determines the generated data (hashed into the cache name)."""
    rows: int = 4_000_000
    seed: int = 0
    test_fraction: float = 0.1
    min_vocab: int = 10
    max_vocab: int = 300_000
    id_scale: float = 0.18        # sigma of per-id effects, before the tail gain
    fm_scale: float = 0.17        # sigma of planted embeddings, before the tail gain
    dense_scale: float = 0.27     # |beta| of the dense effects
    positive_rate: float = 0.25
    shard_rows: int = DEFAULT_SHARD_ROWS
    # Added after version 1; left out of the cache hash at their defaults, so the built-in set keeps
    # its name (and its bytes: with these defaults nothing is drawn differently).
    valid_fraction: float = 0.0
    vocab: str = "geomspace"

    def check(self) -> None:
        """Refuse settings that make no dataset or an empty split; messages name the option."""
        if self.rows < 1:
            raise PreprocessError(f"--rows must be >= 1, got {self.rows}")
        if not 0.0 < self.test_fraction < 1.0:
            raise PreprocessError(f"--test-fraction must be in (0, 1), got {self.test_fraction}")
        if not 0.0 <= self.valid_fraction < 1.0 - self.test_fraction:
            raise PreprocessError(f"--valid-fraction must be in [0, 1 - test fraction), got {self.valid_fraction}")
        if self.vocab not in VOCAB_SHAPES:
            raise PreprocessError(f"--vocab must be one of {VOCAB_SHAPES}, got {self.vocab!r}")
        if self.shard_rows < 1:
            raise PreprocessError(f"shard_rows must be >= 1, got {self.shard_rows}")
        rows = _split_rows(self)
        if rows["train"] == 0:
            raise PreprocessError(f"--rows {self.rows} with --test-fraction {self.test_fraction} and "
                                  f"--valid-fraction {self.valid_fraction} leaves no training rows")


_NEW_FIELDS = {"valid_fraction": 0.0, "vocab": "geomspace"}


@dataclass
class PlantedModel:
    """Parameters of the planted model; lists are per field f."""
    vocab_sizes: np.ndarray        # (F,) int64
    zipf_exponent: np.ndarray      # (F,)
    missing_rate: np.ndarray       # (F,)
    code_of_rank: list             # [f] (V_f - 1,) int32, a permutation of 1..V_f-1
    id_effect: list                # [f] (V_f,) float64, w_f[code]
    id_embedding: list             # [f] (V_f, K) float64, v_f[code]
    dense_mu: np.ndarray           # (D,)
    dense_sigma: np.ndarray        # (D,)
    dense_missing: np.ndarray      # (D,)
    dense_beta: np.ndarray         # (D,)
    hex_tables: list               # [f] (V_f,) uint32 sorted: raw hex value printed for code c
    bias: float = 0.0


def _rng(seed: int, chunk: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, chunk, purpose])


def sorted_unique(x: np.ndarray) -> np.ndarray:
    """np.unique(x) for a 1-D array, by sort and compare: the same array, but NumPy 2.4's np.unique
    takes 27 s of CPU on 11M uint64 values where this takes 0.4 s."""
    x = np.sort(x)
    keep = np.empty(len(x), dtype=bool)
    keep[:1] = True
    np.not_equal(x[1:], x[:-1], out=keep[1:])
    return x[keep]


def _field_params(cfg: SyntheticConfig, v: int, rng: np.random.Generator) -> tuple:
    """One field's planted parameters: (code_of_rank (V-1,), id_effect (V,), id_embedding (V, K), hex (V,))."""
    perm = (rng.permutation(v - 1) + 1).astype(np.int32)
    # tail gain g(rank): 0.5 at the head rising to 2.0 at the rarest ids.
    rank_of_code = np.empty(v, dtype=np.float64)
    rank_of_code[perm] = np.arange(v - 1)
    rank_of_code[0] = 0.0
    gain = 0.5 + 1.5 * np.log1p(rank_of_code) / np.log1p(v)
    id_effect = cfg.id_scale * gain * rng.standard_normal(v)
    id_embedding = cfg.fm_scale * np.sqrt(gain)[:, None] * rng.standard_normal((v, EMBED_DIM))
    # Distinct sorted 32-bit values so that hex order == code order (missing code 0 prints empty).
    hexes = sorted_unique(rng.integers(0, 2**32, size=int(v * 1.1) + 16, dtype=np.uint64))
    hexes = np.sort(rng.choice(hexes, size=v, replace=False)).astype(np.uint32)
    return perm, id_effect, id_embedding, hexes


def planted_model(cfg: SyntheticConfig, workers: int = 1) -> PlantedModel:
    """Draw the planted parameters from cfg.seed (bias still 0; see calibrate_bias).

    The built-in shape draws every field from one stream, in field order (the bytes of version 1).
    The criteo shape (33.8M ids) gives each field its own stream, so `workers` threads draw fields
    in parallel; its data depends on the seed only, not on workers.
    """
    rng = _rng(cfg.seed, 0, _PARAMS)
    if cfg.vocab == "criteo":
        vocab = np.array(CRITEO_VOCAB, dtype=np.int64)
    else:
        vocab = np.round(np.geomspace(cfg.min_vocab, cfg.max_vocab, NUM_SPARSE)).astype(np.int64)
        vocab = rng.permutation(vocab)  # field size unrelated to field index, as in Criteo
    zipf = rng.uniform(1.05, 1.4, NUM_SPARSE)
    missing = np.where(rng.random(NUM_SPARSE) < 0.3, rng.uniform(0.05, 0.45, NUM_SPARSE), 0.0)
    if cfg.vocab == "criteo":
        rngs = [_rng(cfg.seed, f + 1, _PARAMS) for f in range(NUM_SPARSE)]   # streams no chunk uses
        order = np.argsort(-vocab)                                            # biggest fields first
        with ThreadPoolExecutor(max(1, workers)) as pool:
            drawn = dict(zip(order, pool.map(lambda f: _field_params(cfg, int(vocab[f]), rngs[f]), order)))
        per_field = [drawn[f] for f in range(NUM_SPARSE)]
    else:
        per_field = [_field_params(cfg, int(v), rng) for v in vocab]
    code_of_rank, id_effect, id_embedding, hex_tables = (list(x) for x in zip(*per_field))
    dense_mu = rng.uniform(0.0, 4.0, NUM_DENSE)
    dense_sigma = rng.uniform(0.8, 2.0, NUM_DENSE)
    dense_missing = np.where(rng.random(NUM_DENSE) < 0.5, rng.uniform(0.02, 0.45, NUM_DENSE), 0.0)
    beta = np.zeros(NUM_DENSE)
    beta[:4] = cfg.dense_scale * rng.choice([-1.0, 1.0], 4)
    return PlantedModel(vocab, zipf, missing, code_of_rank, id_effect, id_embedding,
                        dense_mu, dense_sigma, dense_missing, beta, hex_tables)


def draw_sparse(model: PlantedModel, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sparse codes (n, F) int32: missing with prob missing_rate[f], else a power-law rank -> code."""
    codes = np.empty((n, NUM_SPARSE), dtype=np.int32)
    for f in range(NUM_SPARSE):
        u = rng.random(n)
        m = model.missing_rate[f]
        s = model.zipf_exponent[f]
        top = float(model.vocab_sizes[f] - 1)  # ranks 0..top-1
        # Inverse CDF of a continuous power law x^-s on [1, top+1); rank = floor(x) - 1.
        v = np.clip((u - m) / (1.0 - m), 0.0, 1.0 - 1e-12)
        x = (1.0 - v * (1.0 - (top + 1.0) ** (1.0 - s))) ** (1.0 / (1.0 - s))
        rank = np.minimum(x.astype(np.int64) - 1, int(top) - 1)
        col = model.code_of_rank[f][rank]
        col[u < m] = 0
        codes[:, f] = col
    return codes


def draw_dense_raw(model: PlantedModel, n: int, rng: np.random.Generator) -> np.ndarray:
    """Raw dense counts (n, D) int64, -1 where missing."""
    z = rng.standard_normal((n, NUM_DENSE))
    x = np.maximum(np.floor(np.exp(model.dense_mu + model.dense_sigma * z)) - 1.0, 0.0)
    x = np.minimum(x, 2.0**40).astype(np.int64)
    x[rng.random((n, NUM_DENSE)) < model.dense_missing] = -1
    return x


def planted_logit(model: PlantedModel, codes: np.ndarray, dense_raw: np.ndarray) -> np.ndarray:
    """logit (n,) float64 of the planted model, bias included."""
    n = codes.shape[0]
    logit = np.full(n, model.bias)
    sum_v = np.zeros((n, EMBED_DIM))
    sum_of_squares = np.zeros(n)
    for f in range(NUM_SPARSE):
        logit += model.id_effect[f][codes[:, f]]
        v = model.id_embedding[f][codes[:, f]]            # (n, K)
        sum_v += v
        sum_of_squares += np.einsum("nk,nk->n", v, v)
    square_of_sum = np.einsum("nk,nk->n", sum_v, sum_v)
    logit += 0.5 * (square_of_sum - sum_of_squares)
    filled = np.maximum(dense_raw, 0).astype(np.float64)
    logit += (np.log1p(filled) - model.dense_mu) @ model.dense_beta
    return logit


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for large |x|


def calibrate_bias(model: PlantedModel, cfg: SyntheticConfig, pilot_rows: int = 200_000) -> float:
    """Bias b so that mean sigmoid(b + score) on a pilot sample equals cfg.positive_rate (bisection)."""
    rng = _rng(cfg.seed, 0, _PILOT)
    codes = draw_sparse(model, pilot_rows, rng)
    dense = draw_dense_raw(model, pilot_rows, rng)
    model.bias = 0.0
    score = planted_logit(model, codes, dense)
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _sigmoid(score + mid).mean() > cfg.positive_rate:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def _chunks(rows: int):
    for i, start in enumerate(range(0, rows, CHUNK_ROWS)):
        yield i, min(CHUNK_ROWS, rows - start)


def _chunk_split_rows(n: int, cfg: SyntheticConfig) -> tuple[int, int]:
    """(test, valid) rows of a chunk of n rows."""
    return int(round(n * cfg.test_fraction)), int(round(n * cfg.valid_fraction))


def _split_rows(cfg: SyntheticConfig) -> dict[str, int]:
    """Rows per split: each chunk holds its own rounded share, so the totals are known up front."""
    test = valid = 0
    for _, n in _chunks(cfg.rows):
        t, v = _chunk_split_rows(n, cfg)
        test, valid = test + t, valid + v
    rows = {"train": cfg.rows - test - valid, "test": test}
    if cfg.valid_fraction > 0:
        rows["valid"] = valid
    return rows


def _split_of_rows(n: int, cfg: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """(n,) int8: 0 train, 1 valid, 2 test; test rows are the first of a permutation, valid the next."""
    n_test, n_valid = _chunk_split_rows(n, cfg)
    perm = rng.permutation(n)
    where = np.zeros(n, dtype=np.int8)
    where[perm[:n_test]] = 2
    where[perm[n_test:n_test + n_valid]] = 1
    return where


def _in_order(fn, items, workers: int):
    """fn(item) for each item, computed by `workers` threads, yielded in order, 2 * workers ahead at most."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _dense_range(model: PlantedModel, cfg: SyntheticConfig, chunk: tuple[int, int]):
    """Pass 1 of one chunk: (min (D,), max (D,)) of the dense values with missing filled by 0."""
    i, n = chunk
    filled = np.maximum(draw_dense_raw(model, n, _rng(cfg.seed, i, _DENSE)), 0)
    return filled.min(axis=0), filled.max(axis=0)


def _draw_chunk(model: PlantedModel, cfg: SyntheticConfig, scale, offset, chunk: tuple[int, int]) -> dict:
    """Pass 2 of one chunk: codes (n, F), dense_raw (n, D), dense (n, D) float32, label (n,), prob (n,), split (n,)."""
    i, n = chunk
    codes = draw_sparse(model, n, _rng(cfg.seed, i, _SPARSE))
    dense_raw = draw_dense_raw(model, n, _rng(cfg.seed, i, _DENSE))
    rng = _rng(cfg.seed, i, _LABEL)
    prob = _sigmoid(planted_logit(model, codes, dense_raw))
    label = (rng.random(n) < prob).astype(np.float32)
    split = _split_of_rows(n, cfg, rng)
    dense = minmax_apply(np.maximum(dense_raw, 0), scale, offset)
    return {"codes": codes, "dense_raw": dense_raw, "dense": dense, "label": label, "prob": prob, "split": split}


def default_workers() -> int:
    """Threads for generation: the CPUs this process may use, at most 32."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(32, cpus))


def generate(out_dir: str | os.PathLike, rows: int = 4_000_000, seed: int = 0, test_fraction: float = 0.1,
             raw_tsv: str | os.PathLike | None = None, verbose: bool = False, workers: int | None = None,
             **overrides) -> Path:
    """Generate a synthetic dataset directory (see module docstring); returns its path.

    overrides: other SyntheticConfig fields (id_scale, fm_scale, max_vocab, shard_rows, valid_fraction,
    vocab, ...). raw_tsv: also write the same rows as a raw Criteo train.txt-format file there.
    workers: threads drawing chunks (default: the CPUs available); the data does not depend on it.
    """
    cfg = SyntheticConfig(rows=rows, seed=seed, test_fraction=test_fraction, **overrides)
    cfg.check()
    check_out_dir(out_dir, inputs=(raw_tsv,), what="the --raw-tsv file")
    workers = default_workers() if workers is None else max(1, int(workers))
    t0 = time.perf_counter()
    model = planted_model(cfg, workers)
    model.bias = calibrate_bias(model, cfg)
    t_model = time.perf_counter() - t0

    # Pass 1: dense min/max over all rows (missing filled with 0, as the reference fillna(0)).
    col_min = np.full(NUM_DENSE, np.inf)
    col_max = np.full(NUM_DENSE, -np.inf)
    for lo, hi in _in_order(lambda c: _dense_range(model, cfg, c), _chunks(rows), workers):
        col_min, col_max = np.minimum(col_min, lo), np.maximum(col_max, hi)
    scale, offset = minmax_params(col_min, col_max)

    # Pass 2: everything, streamed into shards in chunk order.
    split_rows = _split_rows(cfg)
    eval_splits = tuple(s for s in ("valid", "test") if s in split_rows)
    test_label, test_prob = [], []
    positives = 0
    raw = open(raw_tsv, "wb") if raw_tsv else None
    try:
        with DatasetWriter(out_dir, split_rows, NUM_SPARSE, NUM_DENSE, shard_rows=cfg.shard_rows,
                           prob_splits=eval_splits) as writer:
            chunks = _in_order(lambda c: _draw_chunk(model, cfg, scale, offset, c), _chunks(rows), workers)
            for c in chunks:
                positives += int(c["label"].sum())
                for code, split in ((0, "train"), (1, "valid"), (2, "test")):
                    if split in split_rows:
                        rows_of = c["split"] == code
                        writer.append(split, c["codes"][rows_of], c["dense"][rows_of], c["label"][rows_of],
                                      c["prob"][rows_of] if split in eval_splits else None)
                is_test = c["split"] == 2
                test_label.append(c["label"][is_test])
                test_prob.append(c["prob"][is_test])
                if raw is not None:
                    raw.write(format_criteo_lines(c["label"].astype(np.int8), c["dense_raw"], c["codes"],
                                                  model.hex_tables))
            y, p = np.concatenate(test_label), np.concatenate(test_prob)
            meta = {
                "kind": "synthetic",
                "sparse_features": [{"name": nm, "vocab_size": int(v)} for nm, v in
                                    zip(SPARSE_NAMES, model.vocab_sizes)],
                "dense_features": dense_transform_meta("minmax", DENSE_NAMES, col_min, col_max),
                "source": {"path": None, "bytes": 0, "sha256": None, "generator": "dataio.synthetic",
                           "generator_version": GENERATOR_VERSION},
                "options": asdict(cfg),
                "bayes": {"test_auc": auc(y, p), "test_logloss": logloss(y, p)},
                "planted": {"bias": model.bias, "positive_rate": positives / max(rows, 1),
                            "embed_dim": EMBED_DIM, "config_hash": config_hash(cfg)},
            }
            path = writer.finish(meta)
    finally:
        if raw is not None:
            raw.close()
    if verbose:
        dt = time.perf_counter() - t0
        print(f"wrote {rows} rows to {path} in {dt:.1f} s ({rows / dt:,.0f} rows/s with {workers} threads; "
              f"planted model {t_model:.1f} s); splits {split_rows}; bayes {meta['bayes']}, "
              f"positive rate {meta['planted']['positive_rate']:.4f}")
    return path


def config_hash(cfg: SyntheticConfig) -> str:
    """Short hash of the generator version and all parameters; names the cached default dataset.

    Fields added after version 1 enter only when they differ from their defaults (old names stay).
    """
    params = {k: v for k, v in asdict(cfg).items() if not (k in _NEW_FIELDS and v == _NEW_FIELDS[k])}
    text = json.dumps({"version": GENERATOR_VERSION, **params}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_cache_dir() -> Path:
    return Path(os.environ.get("COWCLIP_CACHE", Path.home() / ".cache" / "cowclip-engine"))


def ensure_default(cache_dir: str | os.PathLike | None = None, **overrides) -> Path:
    """Path of the default synthetic dataset, generating it once into the cache if absent or invalid."""
    cfg = SyntheticConfig(**overrides)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / f"synthetic-{cfg.rows}-s{cfg.seed}-{config_hash(cfg)}"
    try:
        load_meta(path)
        return path
    except MetaError:
        pass
    params = asdict(cfg)
    return generate(path, **{k: params.pop(k) for k in ("rows", "seed", "test_fraction")}, **params)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="dataset directory: new, empty, or a dataset written by this tool (replaced)")
@click.option("--rows", default=4_000_000, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--test-fraction", default=0.1, show_default=True,
              type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True))
@click.option("--valid-fraction", default=0.0, show_default=True, type=click.FloatRange(0.0, 1.0, max_open=True),
              help="also a valid split (with prob, like test), taken from the train rows")
@click.option("--vocab", default="geomspace", show_default=True, type=click.Choice(list(VOCAB_SHAPES)),
              help="geomspace: 26 sizes 10..300,000 (the built-in set); criteo: Criteo Kaggle's 26 cardinalities")
@click.option("--workers", default=None, type=click.IntRange(min=1),
              help="threads drawing chunks [default: the CPUs available]; the data does not depend on it")
@click.option("--raw-tsv", default=None, type=click.Path(dir_okay=False),
              help="also write the same rows as a raw Criteo train.txt-format TSV")
def main(out_dir: str, rows: int, seed: int, test_fraction: float, valid_fraction: float, vocab: str,
         workers: int | None, raw_tsv: str | None) -> None:
    """Generate Criteo-shaped synthetic data with a planted model."""
    try:
        with cleanup_on_terminate():
            generate(out_dir, rows=rows, seed=seed, test_fraction=test_fraction, raw_tsv=raw_tsv, verbose=True,
                     workers=workers, valid_fraction=valid_fraction, vocab=vocab)
    except PreprocessError as e:
        raise click.ClickException(str(e)) from e
    except OSError as e:
        raise click.ClickException(f"{e.filename or out_dir}: {e.strerror or e}; nothing was published") from e


if __name__ == "__main__":
    sys.exit(main())
