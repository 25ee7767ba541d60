"""Data that lies: headers declaring more than their file holds, absurd chunking, other vocabularies
behind the same sizes, CR LF line ends, and a generator pointed at another dataset's file. Each is
refused with one line naming the file, before anything large is allocated or anything is overwritten."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from dataio.preprocess import PreprocessError, preprocess
from dataio.reader import read_split
from dataio.shards import ShardError, read_shard
from dataio.synthetic import generate

from dataio_samples import avazu_file  # noqa: E402 (tests/)

REPO = Path(__file__).resolve().parents[1]
SAMPLES = Path("/work/shared/data")


def lying_shard(path: Path, rows: int, fields: int = 2, chunk_rows: int | None = None, fill: bool = False) -> Path:
    """A shard whose header declares `rows` rows; unless filled, the file stores none of them."""
    with h5py.File(path, "w") as f:
        f.attrs["format_version"] = 1
        f.attrs["rows"] = rows
        f.create_dataset("sparse", shape=(rows, fields), dtype=np.int32,
                         chunks=(chunk_rows, fields) if chunk_rows else None)
        f.create_dataset("dense", shape=(rows, 0), dtype=np.float32)
        f.create_dataset("label", shape=(rows,), dtype=np.float32, chunks=(chunk_rows,) if chunk_rows else None)
        if fill:
            f["sparse"][...] = 0
            f["label"][...] = 0
    return path


def dataset_with_train_shard(data_dir, tmp_path: Path, rows: int, **shard) -> Path:
    """A copy of the conftest dataset whose train split is one lying shard, meta.json agreeing."""
    import shutil

    d = Path(shutil.copytree(data_dir, tmp_path / "lying"))
    meta = json.loads((d / "meta.json").read_text())
    for name in meta["splits"]["train"]["shards"]:
        (d / name).unlink()
    lying_shard(d / "train-00000.h5", rows, **shard)
    meta["splits"]["train"] = {"rows": rows, "shards": ["train-00000.h5"]}
    (d / "meta.json").write_text(json.dumps(meta))
    return d


def test_a_shard_declaring_170m_rows_in_a_few_kilobytes_is_refused_before_allocating(tmp_path):
    shard = lying_shard(tmp_path / "train-00000.h5", 170_000_000, fields=39)
    assert shard.stat().st_size < 16_000
    started = time.perf_counter()
    with pytest.raises(ShardError, match=r"declares .* but the file stores 0 bytes"):
        read_shard(shard)
    print(f"refused in {time.perf_counter() - started:.3f} s")


def test_a_dataset_whose_header_and_meta_agree_on_rows_the_file_lacks_is_refused(data_dir, tmp_path):
    # 1M declared rows of zeros would pass every value check: only the stored size gives it away
    d = dataset_with_train_shard(data_dir, tmp_path, 1_000_000)
    with pytest.raises(ShardError, match="train-00000.h5: dataset"):
        read_split(d, "train")


def test_one_row_hdf5_chunks_are_refused(data_dir, tmp_path):
    d = dataset_with_train_shard(data_dir, tmp_path, 20_000, chunk_rows=1, fill=True)
    with pytest.raises(ShardError, match=r"stored in chunks of \(1,"):
        read_split(d, "train")


def test_chunks_of_ordinary_size_are_read(tmp_path):
    shard = lying_shard(tmp_path / "s.h5", 20_000, chunk_rows=4096, fill=True)
    assert read_shard(shard)["sparse"].shape == (20_000, 2)


# ---- vocabularies behind the same sizes ---------------------------------------------------------

def shifted_hex(text: str) -> str:
    """Every hex digit of every categorical value d -> (d + 1) % 16: a bijection on values, so each
    field keeps its number of distinct values (its vocabulary size) while its values all change."""
    table = str.maketrans("0123456789abcdef", "123456789abcdef0")
    lines = []
    for line in text.splitlines(keepends=True):
        cols = line.rstrip("\n").split("\t")
        cols[14:] = [c.translate(table) for c in cols[14:]]
        lines.append("\t".join(cols) + "\n")
    return "".join(lines)


def evaluate(run: Path, data: Path):
    from engine import evaluate as ev

    return CliRunner().invoke(ev.main, ["--run", str(run), "--data", str(data), "--device", "cpu"])


@pytest.mark.skipif(not (SAMPLES / "criteo_sample.tsv").is_file(), reason="no Criteo sample")
def test_evaluate_refuses_other_vocabularies_of_the_same_sizes_and_takes_vocab_from_data(tmp_path):
    raw = SAMPLES / "criteo_sample.tsv"
    other_raw = tmp_path / "other.tsv"
    other_raw.write_text(shifted_hex(raw.read_text()))
    trained_on = preprocess("criteo", raw, tmp_path / "a")
    other = preprocess("criteo", other_raw, tmp_path / "b")
    same_vocab = preprocess("criteo", other_raw, tmp_path / "c", vocab_from=trained_on)
    sizes = [[f["vocab_size"] for f in json.loads((d / "meta.json").read_text())["sparse_features"]]
             for d in (trained_on, other)]
    assert sizes[0] == sizes[1]                      # the sizes cannot tell them apart
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "NUMBA_NUM_THREADS": "1"}
    trained = subprocess.run([sys.executable, "-m", "engine.train", "--data", str(trained_on), "--bs", "64",
                              "--max-steps", "1", "--device", "cpu", "--out", str(run)],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr[-2000:]
    refused = evaluate(run, other)
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert f"{other}: its vocabularies differ from those run {run} was trained on" in refused.output
    assert evaluate(run, same_vocab).exit_code == 0


# ---- CR LF line ends ----------------------------------------------------------------------------

def test_avazu_with_crlf_encoded_with_an_lf_vocabulary_is_refused_as_criteo_is(tmp_path):
    lf = avazu_file(tmp_path / "lf.csv", n=40)
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes(lf.read_bytes().replace(b"\n", b"\r\n"))
    vocab = preprocess("avazu", lf, tmp_path / "lf")
    with pytest.raises(PreprocessError) as avazu_error:
        preprocess("avazu", crlf, tmp_path / "crlf", vocab_from=vocab)
    criteo = tmp_path / "criteo.tsv"
    criteo.write_bytes((SAMPLES / "criteo_sample.tsv").read_bytes().replace(b"\n", b"\r\n")
                       if (SAMPLES / "criteo_sample.tsv").is_file() else b"0\t" * 39 + b"0\r\n")
    with pytest.raises(PreprocessError) as criteo_error:
        preprocess("criteo", criteo, tmp_path / "c")
    assert str(avazu_error.value) == f"{crlf}:1: " + str(criteo_error.value).split(":1: ", 1)[1]
    assert "CR LF" in str(avazu_error.value)
    assert not (tmp_path / "crlf").exists()


def test_an_avazu_line_ending_in_cr_amid_lf_lines_is_a_bad_line(tmp_path):
    lf = avazu_file(tmp_path / "lf.csv", n=40)
    lines = lf.read_bytes().split(b"\n")
    lines[5] += b"\r"
    mixed = tmp_path / "mixed.csv"
    mixed.write_bytes(b"\n".join(lines))
    with pytest.raises(PreprocessError, match=r"mixed.csv:6: column C21: line ends with CR"):
        preprocess("avazu", mixed, tmp_path / "m", vocab_from=preprocess("avazu", lf, tmp_path / "lf"))


# ---- the generator's --raw-tsv ------------------------------------------------------------------

def test_synthetic_raw_tsv_refuses_to_replace_another_datasets_file(tmp_path):
    from dataio import synthetic

    other = generate(tmp_path / "other", rows=500, seed=1, max_vocab=50)
    meta_before = (other / "meta.json").read_bytes()
    result = CliRunner().invoke(synthetic.main, ["--out", str(tmp_path / "new"), "--rows", "500",
                                                 "--raw-tsv", str(other / "meta.json")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"--raw-tsv {other / 'meta.json'}: exists; nothing was written" in result.output
    assert (other / "meta.json").read_bytes() == meta_before and not (tmp_path / "new").exists()
    raw = tmp_path / "raw.tsv"
    raw.write_text("mine\n")
    result = CliRunner().invoke(synthetic.main, ["--out", str(tmp_path / "new"), "--rows", "500",
                                                 "--raw-tsv", str(raw), "--overwrite-raw-tsv"])
    assert result.exit_code == 0, result.output
    assert len(raw.read_text().splitlines()) == 500
    assert not list(tmp_path.glob("raw.tsv.tmp-*"))
