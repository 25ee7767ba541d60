"""Valid splits (issue 16 part 3), -h on every dataio entry point (issue 16 part 4), and the synthetic
generator's speed path (issue 18): parallel chunks give the same bytes as the built-in set always had."""
import hashlib

import numpy as np
import pytest
from click.testing import CliRunner

from dataio.meta import load_meta
from dataio.preprocess import preprocess
from dataio.reader import BatchReader, read_split
from dataio.synthetic import generate
from dataio_samples import criteo_file


def test_i16_preprocess_valid_fraction_keeps_test_rows_and_adds_valid(tmp_path):
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


def test_i16_synthetic_valid_split_has_prob_and_leaves_test_alone(tmp_path):
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
def test_i16_help_on_every_entry_point(module, flag):
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


# The arrays of generate(rows=30_000, seed=3, max_vocab=2_000) as the generator made them before the
# parallel path (commit eb17f93); the built-in set's Bayes AUC and the README's numbers rest on them.
GOLDEN = "38552055ed29e5bf22cb359be5ee309d52d72034fd5ac5d11e9420b178cc8a37"


def test_i18_parallel_generation_gives_the_same_bytes_as_before(tmp_path):
    one = generate(tmp_path / "one", rows=30_000, seed=3, max_vocab=2_000, shard_rows=7_000, workers=1)
    assert _digest(one) == GOLDEN
    assert load_meta(one)["bayes"]["test_auc"] == pytest.approx(0.8420284483807501, abs=1e-15)


def test_i18_worker_count_does_not_change_the_data(tmp_path, monkeypatch):
    import dataio.synthetic as syn
    monkeypatch.setattr(syn, "CHUNK_ROWS", 4_000)          # several chunks, so threads really interleave
    one = generate(tmp_path / "one", rows=30_000, seed=5, max_vocab=500, workers=1)
    three = generate(tmp_path / "three", rows=30_000, seed=5, max_vocab=500, workers=3)
    assert _digest(one) == _digest(three)
    assert load_meta(one)["bayes"] == load_meta(three)["bayes"]
