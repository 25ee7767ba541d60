"""Preprocessing equals the reference pipeline (pandas + LabelEncoder + MinMaxScaler) exactly."""
from pathlib import Path

import numpy as np
import pytest

from dataio.meta import load_meta
from dataio.preprocess import RAND_TEST_FRACTION, PreprocessError, preprocess
from dataio.reader import read_split
from dataio.splits import assign_splits
from dataio.synthetic import generate

# the reference samples: ../shared/data beside the checkout, or /work/shared/data beside a worktree
_HERE = Path(__file__).resolve()
SHARED = next((p for p in (_HERE.parents[2] / "shared" / "data", _HERE.parents[3] / "shared" / "data")
               if p.is_dir()), _HERE.parents[2] / "shared" / "data")
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"reference samples not found at {SHARED}")
pytest.importorskip("pandas", reason="pandas is needed for the reference pipeline (pip install pandas)")
pytest.importorskip("sklearn", reason="scikit-learn is needed for the reference pipeline")
from dataio.reference_pipeline import reference_encode  # noqa: E402


def in_file_order(out, dataset, split, seed=0):
    """Rows of the written splits put back in file order, via the same seeded assignment."""
    meta = load_meta(out)
    n = sum(s["rows"] for s in meta["splits"].values())
    assign, _ = assign_splits(n, split, seed, RAND_TEST_FRACTION[dataset])
    full = {}
    for code, name in enumerate(("train", "valid", "test")):
        if name in meta["splits"]:
            part = read_split(out, name)
            for k, a in part.items():
                full.setdefault(k, np.zeros((n,) + a.shape[1:], a.dtype))[assign == code] = a
    return full


@needs_shared
@pytest.mark.parametrize("dataset,name", [("criteo", "criteo_sample.tsv"), ("avazu", "avazu_sample.csv")])
@pytest.mark.parametrize("split", ["rand", "seq"])
def test_matches_reference(tmp_path, dataset, name, split):
    if dataset == "avazu" and split == "seq":
        pytest.skip("seq split is Criteo-only, as in the reference")
    path = SHARED / name
    ref = reference_encode(dataset, str(path))
    out = preprocess(dataset, path, tmp_path / "d", split=split, seed=7, shard_rows=50)
    got = in_file_order(out, dataset, split, seed=7)
    assert np.array_equal(got["sparse"], ref["sparse"])
    assert np.array_equal(got["dense"], ref["dense"].astype(np.float32))  # bit-exact after the cast
    assert np.array_equal(got["label"], ref["label"])
    meta = load_meta(out)
    assert [f["vocab_size"] - 1 for f in meta["sparse_features"]] == list(ref["sparse"].max(axis=0) + 1)
    n_test = meta["splits"]["test"]["rows"]
    n = len(ref["label"])
    assert n_test == (n - int((1 - 1 / 7) * n) if split == "seq" else int(np.ceil({"criteo": .1, "avazu": .2}[dataset] * n)))
    assert (out / "vocab.npz").is_file() and len(meta["source"]["sha256"]) == 64


@needs_shared
def test_avazu_integer_columns_sort_numerically(tmp_path):
    out = preprocess("avazu", SHARED / "avazu_sample.csv", tmp_path / "d")
    types = {f["name"]: f["value_type"] for f in load_meta(out)["sparse_features"]}
    assert types["C20"] == "int" and types["hour"] == "int" and types["site_id"] == "str"


@needs_shared
def test_vocab_from_maps_unseen_to_oov(tmp_path):
    src = SHARED / "criteo_sample.tsv"
    full = preprocess("criteo", src, tmp_path / "full", split="seq")
    lines = src.read_bytes().splitlines(keepends=True)
    new = tmp_path / "new.tsv"
    fresh = lines[0].split(b"\t")
    fresh[14] = b"0123abcd"                                  # C1 value never seen
    new.write_bytes(b"\t".join(fresh) + b"".join(lines[:50]))
    out = preprocess("criteo", new, tmp_path / "new", split="seq", vocab_from=full)
    got = in_file_order(out, "criteo", "seq")
    ref = in_file_order(full, "criteo", "seq")
    meta = load_meta(full)
    assert got["sparse"][0, 0] == meta["sparse_features"][0]["oov_id"]
    assert np.array_equal(got["sparse"][1:], ref["sparse"][:50])
    assert np.array_equal(got["dense"][1:], ref["dense"][:50])    # the saved min/max, not the new file's
    assert load_meta(out)["sparse_features"] == meta["sparse_features"]


def test_min_count_and_x4_preset_and_synthetic_roundtrip(tmp_path):
    raw = tmp_path / "raw.tsv"
    syn = generate(tmp_path / "syn", rows=20_000, max_vocab=3_000, raw_tsv=raw)
    out = preprocess("criteo", raw, tmp_path / "p", chunk_bytes=1 << 20)   # many chunks
    s_tr, s_te = read_split(syn, "train"), read_split(syn, "test")
    p_tr, p_te = read_split(out, "train"), read_split(out, "test")
    syn_sparse = np.concatenate([s_tr["sparse"], s_te["sparse"]])
    ours = np.concatenate([p_tr["sparse"], p_te["sparse"]])
    for f in range(26):  # ids = rank among the observed codes (unseen codes drop out of the vocabulary)
        expected = np.unique(syn_sparse[:, f], return_inverse=True)[1].ravel()
        assert np.array_equal(np.sort(ours[:, f]), np.sort(expected))
    assert np.array_equal(np.sort(np.concatenate([p_tr["dense"], p_te["dense"]]), axis=0),
                          np.sort(np.concatenate([s_tr["dense"], s_te["dense"]]), axis=0))

    out10 = preprocess("criteo", raw, tmp_path / "m", min_count=10)
    meta = load_meta(out10)
    ids = read_split(out10, "train")["sparse"]
    for f, feat in enumerate(meta["sparse_features"]):
        values, counts = np.unique(syn_sparse[:, f], return_counts=True)
        assert feat["vocab_size"] == (counts >= 10).sum() + 1
        assert ids[:, f].max() <= feat["oov_id"]

    x4 = preprocess("criteo", raw, tmp_path / "x4", preset="criteo_x4")
    meta = load_meta(x4)
    assert len(meta["sparse_features"]) == 39 and meta["dense_features"] == []
    rows = {k: v["rows"] for k, v in meta["splits"].items()}
    assert rows == {"train": 16_000, "valid": 2_000, "test": 2_000}
    assert read_split(x4, "valid")["dense"].shape == (2_000, 0)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "e.tsv"
    empty.write_bytes(b"")
    with pytest.raises(PreprocessError, match="e.tsv: empty file"):
        preprocess("criteo", empty, tmp_path / "o")
    empty.write_bytes(b"\n")
    with pytest.raises(PreprocessError, match="e.tsv:1: column"):
        preprocess("criteo", empty, tmp_path / "o")
    with pytest.raises(PreprocessError, match="no valid rows"):
        preprocess("criteo", empty, tmp_path / "o", on_error="skip")
    empty.write_bytes(b"id,click\n")
    with pytest.raises(PreprocessError, match="e.tsv:1: header lacks"):
        preprocess("avazu", empty, tmp_path / "o")
    assert not (tmp_path / "o").exists()


@needs_shared
def test_two_thread_tokenizer_equals_one_thread_and_keeps_line_numbers(tmp_path, monkeypatch, capsys):
    from dataio import preprocess as pp

    lines = (SHARED / "criteo_sample.tsv").read_text().splitlines(keepends=True)
    lines[150] = "1\tnot-a-number" + "\t" * 38 + "\n"           # a bad line in the second half
    src = tmp_path / "bad.tsv"
    src.write_text("".join(lines))
    monkeypatch.setattr(pp.CriteoTokenizer, "split_bytes", 1 << 30)
    one = preprocess("criteo", src, tmp_path / "one", on_error="skip")
    monkeypatch.setattr(pp.CriteoTokenizer, "split_bytes", 64)  # every chunk cut in two
    two = preprocess("criteo", src, tmp_path / "two", on_error="skip")
    for split in ("train", "test"):
        a, b = read_split(one, split), read_split(two, split)
        for k in a:
            assert np.array_equal(a[k], b[k]), (split, k)
    for out in (one, two):
        errors = load_meta(out)["errors"]
        assert errors["skipped_lines"] == 1 and errors["first"][0]["line"] == 151, errors
