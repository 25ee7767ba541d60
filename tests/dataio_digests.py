"""Digests of everything dataio.synthetic and dataio.preprocess store, on small inputs, as JSON.

`python tests/dataio_digests.py` prints {name: sha256} for: a synthetic set (arrays and meta.json,
Bayes metrics included) and its raw TSV; that TSV preprocessed with minmax, log and the criteo_x4
buckets; and a file of decimal dense values, some of them next to the bucket thresholds
e^sqrt(b), preprocessed with log and criteo_x4. test_same_bytes_on_every_cpu.py runs it in a child
process once per NPY_DISABLE_CPU_FEATURES setting, so each SIMD target NumPy may pick makes them.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

from dataio.meta import load_meta
from dataio.preprocess import preprocess
from dataio.reader import read_split
from dataio.synthetic import generate

SYNTHETIC = dict(rows=30_000, seed=3, max_vocab=2_000, shard_rows=7_000, workers=1)


def dataset_digest(path) -> str:
    """sha256 of every split's arrays and of meta.json (less the input file's path)."""
    meta = load_meta(path)
    h = hashlib.sha256()
    for split in sorted(meta["splits"]):
        for name, array in sorted(read_split(path, split).items()):
            h.update(f"{split}/{name}/{array.dtype}/{array.shape}".encode())
            h.update(np.ascontiguousarray(array).tobytes())
    meta["source"].pop("path", None)
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


def decimal_criteo_file(path: Path, rows: int = 3_000) -> Path:
    """Criteo lines whose dense values are decimals: random ones, and e^sqrt(b) to 15 digits."""
    rng = np.random.default_rng(11)
    near = [f"{math.exp(math.sqrt(b)):.14e}" for b in range(1, 700)]
    lines = []
    for i in range(rows):
        dense = [near[(i * 13 + j) % len(near)] if j % 2 else f"{rng.uniform(0, 10.0 ** (j % 7)):.9g}"
                 for j in range(13)]
        cats = [f"{(i * 2654435761 + 7 * j) % 97:08x}" for j in range(26)]
        lines.append("\t".join([str(i % 2)] + dense + cats) + "\n")
    path.write_text("".join(lines))
    return path


def digests(root: Path) -> dict[str, str]:
    raw = root / "raw.tsv"
    out = {"synthetic": dataset_digest(generate(root / "syn", raw_tsv=raw, **SYNTHETIC)),
           "synthetic_raw_tsv": hashlib.sha256(raw.read_bytes()).hexdigest()}
    decimals = decimal_criteo_file(root / "decimals.tsv")
    for name, src, options in (("minmax", raw, {}), ("log", raw, {"dense_transform": "log"}),
                               ("criteo_x4", raw, {"preset": "criteo_x4"}),
                               ("decimals_log", decimals, {"dense_transform": "log"}),
                               ("decimals_criteo_x4", decimals, {"preset": "criteo_x4"})):
        out[name] = dataset_digest(preprocess("criteo", src, root / name, **options))
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        json.dump(digests(Path(tmp)), sys.stdout)
