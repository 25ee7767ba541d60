"""Shard and meta.json validation: every failure names the file and says how to fix it."""
import json
import shutil

import h5py
import numpy as np
import pytest

from dataio.meta import MetaError, load_meta, write_meta
from dataio.reader import BatchReader, read_split
from dataio.shards import ShardError, read_shard, write_shard
from dataio.synthetic import generate


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("s") / "d", rows=3_000, max_vocab=300, shard_rows=1_000)


@pytest.fixture
def copy(good, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(good, d)
    return d


def test_roundtrip(tmp_path):
    p = tmp_path / "x.h5"
    sparse = np.arange(12).reshape(4, 3)
    write_shard(p, sparse, np.zeros((4, 0)), np.array([0, 1, 1, 0]), prob=np.full(4, 0.5))
    out = read_shard(p, vocab_sizes=[100, 100, 100])
    assert out["sparse"].dtype == np.int32 and np.array_equal(out["sparse"], sparse)
    assert out["dense"].shape == (4, 0) and out["prob"].dtype == np.float64
    with h5py.File(p) as f:
        assert f.attrs["format_version"] == 1 and f.attrs["rows"] == 4
        assert f["sparse"].chunks is None and f["sparse"].compression is None  # contiguous


def test_truncated_shard_names_file(copy):
    p = copy / "train-00001.h5"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardError, match="train-00001.h5.*(truncated|corrupt)"):
        read_shard(p)
    with pytest.raises(Exception, match="train-00001.h5"):
        read_split(copy, "train")
    with pytest.raises(Exception, match="train-00001.h5"):
        BatchReader(copy, "train", 100)


def test_bad_values_name_file(tmp_path):
    p = tmp_path / "bad.h5"
    write_shard(p, [[0, 5]], [[np.nan]], [1.0])
    with pytest.raises(ShardError, match="bad.h5.*non-finite"):
        read_shard(p)
    write_shard(p, [[0, 5]], [[0.0]], [1.0])
    with pytest.raises(ShardError, match="bad.h5.*field 1"):
        read_shard(p, vocab_sizes=[3, 5])
    write_shard(p, [[0, 1]], [[0.0]], [0.5])
    with pytest.raises(ShardError, match="bad.h5.*label"):
        read_shard(p)
    with h5py.File(p, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(ShardError, match="bad.h5.*format_version.*re-run"):
        read_shard(p)
    with pytest.raises(ValueError, match="row counts"):
        write_shard(p, [[0, 1]], [[0.0], [1.0]], [1.0])


def test_bad_meta_names_file(copy):
    meta = json.loads((copy / "meta.json").read_text())
    (copy / "meta.json").write_text("{not json")
    with pytest.raises(MetaError, match="meta.json.*not valid JSON.*re-run"):
        load_meta(copy)
    for broken in ({**meta, "format_version": 0}, {k: v for k, v in meta.items() if k != "splits"},
                   {**meta, "kind": "mnist"}):
        (copy / "meta.json").write_text(json.dumps(broken))
        with pytest.raises(MetaError, match="meta.json"):
            load_meta(copy)
    (copy / "meta.json").write_text(json.dumps(meta))
    (copy / "test-00000.h5").unlink()
    with pytest.raises(MetaError, match="test-00000.h5 is missing"):
        load_meta(copy)
    (copy / "meta.json").unlink()
    with pytest.raises(MetaError, match="meta.json: missing.*not a finished dataset"):
        BatchReader(copy, "train", 10)


def test_interrupted_write_is_not_a_dataset(tmp_path, monkeypatch):
    import dataio.synthetic as syn

    def boom(*a, **k):
        raise RuntimeError("killed")
    monkeypatch.setattr(syn, "auc", boom)  # fails after the shards, before meta.json
    with pytest.raises(RuntimeError):
        generate(tmp_path / "d", rows=2_000, max_vocab=100)
    assert not (tmp_path / "d").exists()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(MetaError, match="does not exist"):
        load_meta(tmp_path / "d")


def test_write_meta_is_atomic_and_versioned(tmp_path):
    write_meta(tmp_path, {"kind": "criteo"})
    assert json.loads((tmp_path / "meta.json").read_text())["format_version"] == 1
    assert not list(tmp_path.glob("*.tmp"))
