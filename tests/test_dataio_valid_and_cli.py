"""Valid splits, -h on every dataio entry point, and the synthetic generator's threads: the data does
not depend on how many draw it (its digest on every CPU: test_same_bytes_on_every_cpu.py)."""
import hashlib

import numpy as np
import pytest
from click.testing import CliRunner

from dataio.meta import load_meta
from dataio.preprocess import preprocess
from dataio.reader import BatchReader, read_split
from dataio.synthetic import generate
from dataio_samples import criteo_file


def test_preprocess_valid_fraction_keeps_test_rows_and_adds_valid(tmp_path):
    src = criteo_file(tmp_path / "in.tsv", n=200)
    plain = preprocess("criteo", src, tmp_path / "plain")
    with_valid = preprocess("criteo", src, tmp_path / "valid", valid_fraction=0.15)
    rows = {k: v["rows"] for k, v in load_meta(with_valid)["splits"].items()}
    assert rows == {"train": 150, "valid": 30, "test": 20}
    assert "valid" not in load_meta(plain)["splits"]
    for k, a in read_split(plain, "test").items():          # same test rows as without a valid split
        assert np.array_equal(a, read_split(with_valid, "test")[k])
    valid = read_split(with_valid, "valid")
    assert valid["sparse"].shape == (30, 26)
    reader = BatchReader(with_valid, "valid", 8, shuffle=False, prefetch=0)
    got = np.concatenate([b.label for b in reader.iter_epoch(0)])
    assert np.array_equal(got, valid["label"])
    train = np.concatenate([read_split(with_valid, s)["label"] for s in ("train", "valid")])
    assert len(train) == len(read_split(plain, "train")["label"])


def test_synthetic_valid_split_has_prob_and_leaves_test_alone(tmp_path):
    a = generate(tmp_path / "a", rows=6_000, max_vocab=200, workers=1)
    b = generate(tmp_path / "b", rows=6_000, max_vocab=200, valid_fraction=0.1, workers=1)
    meta = load_meta(b)
    assert {k: v["rows"] for k, v in meta["splits"].items()} == {"train": 4_800, "test": 600, "valid": 600}
    for k, x in read_split(a, "test").items():
        assert np.array_equal(x, read_split(b, "test")[k])
    valid = read_split(b, "valid")
    assert "prob" in valid and 0 < valid["prob"].min() and valid["prob"].max() < 1
    assert meta["bayes"] == load_meta(a)["bayes"]


ENTRY_POINTS = ["dataio.preprocess", "dataio.synthetic", "dataio.bench_reader", "dataio.bench_preprocess"]


@pytest.mark.parametrize("module", ENTRY_POINTS)
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_on_every_entry_point(module, flag):
    import importlib
    main = importlib.import_module(module).main
    result = CliRunner().invoke(main, [flag])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage:") and "-h, --help" in result.output


def _digest(path) -> str:
    h = hashlib.sha256()
    for split in ("train", "test"):
        d = read_split(path, split)
        for k in sorted(d):
            h.update(d[k].tobytes())
    return h.hexdigest()


def test_worker_count_does_not_change_the_data(tmp_path, monkeypatch):
    import dataio.synthetic as syn
    monkeypatch.setattr(syn, "CHUNK_ROWS", 4_000)          # several chunks, so threads really interleave
    one = generate(tmp_path / "one", rows=30_000, seed=5, max_vocab=500, workers=1)
    three = generate(tmp_path / "three", rows=30_000, seed=5, max_vocab=500, workers=3)
    assert _digest(one) == _digest(three)
    assert load_meta(one)["bayes"] == load_meta(three)["bayes"]
