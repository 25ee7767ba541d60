"""Synthetic data: reproducible from its seed, Bayes metrics present and sane, shards valid."""
import json

import numpy as np
import pytest

from dataio.meta import load_meta
from dataio.metrics import auc, logloss
from dataio.reader import read_split
from dataio.synthetic import ensure_default, generate

SMALL = dict(rows=30_000, max_vocab=2_000, shard_rows=7_000)


@pytest.fixture(scope="module")
def two_same_seed(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    return generate(root / "a", seed=3, **SMALL), generate(root / "b", seed=3, **SMALL), \
        generate(root / "c", seed=4, **SMALL)


def test_same_seed_gives_identical_arrays(two_same_seed):
    a, b, c = two_same_seed
    for split in ("train", "test"):
        ra, rb, rc = read_split(a, split), read_split(b, split), read_split(c, split)
        assert ra.keys() == rb.keys()
        for k in ra:
            assert ra[k].tobytes() == rb[k].tobytes(), (split, k)
        assert ra["sparse"].tobytes() != rc["sparse"].tobytes()
    assert load_meta(a)["bayes"] == load_meta(b)["bayes"]


def test_meta_and_shapes(two_same_seed):
    a = two_same_seed[0]
    meta = load_meta(a)
    assert meta["kind"] == "synthetic"
    assert len(meta["sparse_features"]) == 26 and len(meta["dense_features"]) == 13
    assert meta["splits"]["train"]["rows"] + meta["splits"]["test"]["rows"] == SMALL["rows"]
    assert meta["splits"]["test"]["rows"] == pytest.approx(0.1 * SMALL["rows"], abs=5)
    assert len(meta["splits"]["train"]["shards"]) == 4  # 27000 rows / 7000 per shard
    test = read_split(a, "test")
    assert test["sparse"].dtype == np.int32 and test["dense"].dtype == np.float32
    assert test["prob"].dtype == np.float64
    sizes = np.array([f["vocab_size"] for f in meta["sparse_features"]])
    assert (test["sparse"].max(axis=0) < sizes).all() and test["sparse"].min() >= 0
    both = np.concatenate([read_split(a, "train")["dense"], test["dense"]])
    assert both.min() == 0.0 and both.max() == 1.0  # min-max over all rows, like the reference


def test_bayes_metrics_sane(two_same_seed):
    a = two_same_seed[0]
    meta = load_meta(a)
    test = read_split(a, "test")
    bayes = meta["bayes"]
    assert bayes["test_auc"] == pytest.approx(auc(test["label"], test["prob"]))
    assert bayes["test_logloss"] == pytest.approx(logloss(test["label"], test["prob"]))
    assert 0.75 < bayes["test_auc"] < 0.93
    # The true p beats a constant predictor at the base rate.
    base = test["label"].mean()
    assert bayes["test_logloss"] < logloss(test["label"], np.full(len(test["label"]), base))
    assert 0.18 < meta["planted"]["positive_rate"] < 0.32
    # Labels agree with prob on average (calibration of the planted model).
    assert abs(test["prob"].mean() - test["label"].mean()) < 0.03


def test_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    s = rng.integers(0, 20, 300).astype(float)  # many ties
    pos, neg = s[y], s[~y]
    want = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert auc(y, s) == pytest.approx(want)


def test_ensure_default_builds_once(tmp_path, monkeypatch):
    monkeypatch.setenv("COWCLIP_CACHE", str(tmp_path))
    p1 = ensure_default(rows=5_000, max_vocab=500)
    mtime = (p1 / "meta.json").stat().st_mtime_ns
    p2 = ensure_default(rows=5_000, max_vocab=500)
    assert p1 == p2 and p1.parent == tmp_path
    assert (p2 / "meta.json").stat().st_mtime_ns == mtime
    assert json.loads((p1 / "meta.json").read_text())["options"]["rows"] == 5_000
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
