import sys
from pathlib import Path

# the repository root, so that `engine`, `models`, `dataio` and `validate` import without install
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny dataset (1,000 rows in 5 shards) whose sparse column 0 is the row index, so batches reveal
    which rows they hold (tests/test_dataio_reader.py, tests/test_device_reader.py)."""
    import numpy as np

    from dataio.meta import write_meta
    from dataio.shards import write_shard

    d = tmp_path_factory.mktemp("reader")
    n, shard = 1000, 230
    names = []
    for i, start in enumerate(range(0, n, shard)):
        rows = np.arange(start, min(start + shard, n))
        sparse = np.stack([rows, rows % 7], axis=1)
        dense = (rows[:, None] / n * np.ones((1, 2))).astype(np.float32)
        names.append(f"train-{i:05d}.h5")
        write_shard(d / names[-1], sparse, dense, (rows % 2).astype(np.float32))
    write_shard(d / "test-00000.h5", np.zeros((3, 2)), np.zeros((3, 2)), np.zeros(3))
    write_meta(d, {"kind": "synthetic", "bayes": {"test_auc": 0.5, "test_logloss": 0.7},
                   "sparse_features": [{"name": "row", "vocab_size": n}, {"name": "m7", "vocab_size": 7}],
                   "dense_features": [{"name": "a", "transform": {}}, {"name": "b", "transform": {}}],
                   "splits": {"train": {"rows": n, "shards": names},
                              "test": {"rows": 3, "shards": ["test-00000.h5"]}},
                   "source": {"path": None, "bytes": 0, "sha256": None}, "options": {}})
    return d


@pytest.fixture(scope="module")
def with_valid(tmp_path_factory):
    """A small synthetic set with train, valid and test splits (3,000, 600 and 400 rows), written by
    dataio's DatasetWriter the way preprocessing writes a valid split (criteo_x4)."""
    from dataio.meta import load_meta
    from dataio.reader import read_split
    from dataio.synthetic import generate
    from dataio.writer import DatasetWriter

    root = tmp_path_factory.mktemp("data")
    src = generate(root / "src", rows=4000, seed=5, min_vocab=3, max_vocab=100)
    meta = load_meta(src)
    train_rows, test_rows = read_split(src, "train"), read_split(src, "test")
    n_valid = 600
    parts = {"train": {k: v[n_valid:] for k, v in train_rows.items()},
             "valid": {k: v[:n_valid] for k, v in train_rows.items()}, "test": test_rows}
    F, D = train_rows["sparse"].shape[1], train_rows["dense"].shape[1]
    with DatasetWriter(root / "d", {s: len(p["label"]) for s, p in parts.items()}, F, D,
                       prob_splits=("test",)) as writer:
        for split, p in parts.items():
            writer.append(split, p["sparse"], p["dense"], p["label"], p.get("prob") if split == "test" else None)
        return str(writer.finish({k: v for k, v in meta.items() if k not in ("splits", "format_version")}))
