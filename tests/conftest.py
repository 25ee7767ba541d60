import sys
from pathlib import Path

# the repository root, so that `engine`, `models`, `dataio` and `validate` import without install
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]

# The tiny model of the step and backend tests: every layer of every model present, a few hundred
# parameters, small enough for the CUDA simulator. Its schema is validate.audit.gradcheck.check_batch's.
TINY_MODEL = dict(embed_dim=3, dnn_hidden=(6, 5), cross_layers=2, num_experts=2, low_rank=2, init_stddev=0.3,
                  dtype="float64")


def tiny_model(name: str, **changes):
    """Model `name` built with TINY_MODEL (and `changes`) on vocabularies (4, 12, 1, 6), 3 dense features."""
    from models import ModelConfig, Schema, build_model

    return build_model(name, Schema((4, 12, 1, 6), 3), ModelConfig(**{**TINY_MODEL, **changes}))


def assert_backends_agree(name: str, config, backends=("numpy", "cpu"), steps: int = 2, rtol: float = 1e-12,
                          atol: float = 1e-15) -> list:
    """Model `name` (tiny_model, float64), from the same parameters, trained `steps` steps on
    check_batch(0), check_batch(1), ... under StepConfig `config` on each backend, ends with the same
    parameters and Adam moments on all of them, to rtol/atol. -> the first backend's step infos
    (with the clip audit)."""
    import numpy as np

    from engine.backend import get_backend
    from engine.optim import AdamState
    from engine.step import train_step
    from validate.audit.gradcheck import check_batch

    model = tiny_model(name)
    ends, infos = [], []
    for backend in backends:
        kernels = get_backend(backend)
        params = model.init_params(7)
        state = AdamState.zeros_like(params, np)
        infos.append([train_step(model, params, state, check_batch(seed), config, kernels, audit=True)
                      for seed in range(steps)])
        ends.append((backend, params, state))
    (first, want, want_state), *others = ends
    for backend, got, got_state in others:
        for key in want:
            for what, a, b in (("", got[key], want[key]), ("m of ", got_state.m[key], want_state.m[key]),
                               ("v of ", got_state.v[key], want_state.v[key])):
                np.testing.assert_allclose(a, b, rtol=rtol, atol=atol,
                                           err_msg=f"{name}: {what}{key}, backend {backend} against {first}")
    return infos[0]


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
