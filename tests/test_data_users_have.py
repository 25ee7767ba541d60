"""The data users have: the reference's dataset names, DeepCTR's Criteo CSV, a file to score encoded as
one split with a run's vocabularies, and no --split that nothing can produce."""
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dataio import preprocess as pp
from dataio.reader import read_split
from dataio.splits import assign_splits

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SAMPLES = next((p for p in (SHARED, Path("/work/shared/data")) if (p / "criteo_sample.csv").is_file()), None)
needs_samples = pytest.mark.skipif(SAMPLES is None, reason="the shared Criteo samples are not here")


def _preprocess(*args):
    result = CliRunner().invoke(pp.main, [str(a) for a in args])
    return result


@needs_samples
def test_the_references_dataset_name_is_accepted(tmp_path):
    result = _preprocess("--dataset", "criteo_kaggle", "--input", SAMPLES / "criteo_sample.tsv",
                       "--out", tmp_path / "d")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "d" / "meta.json").read_text())["kind"] == "criteo"


@needs_samples
def test_deepctr_csv_gives_the_rows_of_the_tsv(tmp_path):
    for name in ("tsv", "csv"):
        result = _preprocess("--dataset", "criteo", "--input", SAMPLES / f"criteo_sample.{name}",
                             "--out", tmp_path / name)
        assert result.exit_code == 0, result.output
    for split in ("train", "test"):
        tsv, csv = read_split(tmp_path / "tsv", split), read_split(tmp_path / "csv", split)
        for key in ("sparse", "dense", "label"):
            assert np.array_equal(tsv[key], csv[key]), (split, key)
    rows = [len(read_split(tmp_path / "csv", split)["label"]) for split in ("train", "test")]
    assert sum(rows) == 200


def test_a_header_in_another_order_is_refused_with_one_line(tmp_path):
    header = ["label"] + [f"C{i}" for i in range(1, 27)] + [f"I{i}" for i in range(1, 14)]
    path = tmp_path / "x.csv"
    path.write_text(",".join(header) + "\n" + ",".join(["0"] + [""] * 39) + "\n")
    result = _preprocess("--dataset", "criteo", "--input", path, "--out", tmp_path / "d")
    assert result.exit_code == 1 and "x.csv:1: a header line, but not DeepCTR's" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "d" / "meta.json").exists()


@needs_samples
def test_split_none_encodes_every_row_with_the_runs_vocabularies(tmp_path):
    assert _preprocess("--dataset", "criteo", "--input", SAMPLES / "criteo_sample.tsv",
                       "--out", tmp_path / "run_data").exit_code == 0
    result = _preprocess("--dataset", "criteo", "--input", SAMPLES / "criteo_sample.csv",
                         "--out", tmp_path / "score",
                         "--split", "none", "--vocab-from", tmp_path / "run_data")
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "score" / "meta.json").read_text())
    assert list(meta["splits"]) == ["all"] and meta["splits"]["all"]["rows"] == 200
    every = read_split(tmp_path / "score", "all")
    assign, _ = assign_splits(200, "rand", 0, 0.1)               # the run's data: rows in file order per split
    for code, split in ((0, "train"), (2, "test")):
        part = read_split(tmp_path / "run_data", split)
        assert np.array_equal(every["sparse"][assign == code], part["sparse"])
        assert np.array_equal(every["label"][assign == code], part["label"])


def test_split_none_needs_the_runs_vocabularies(tmp_path):
    from tests.dataio_samples import criteo_file

    result = _preprocess("--dataset", "criteo", "--input", criteo_file(tmp_path / "t.txt"), "--out", tmp_path / "d",
                         "--split", "none")
    assert result.exit_code == 1 and "--split none" in result.output and "--vocab-from" in result.output


@needs_samples
def test_evaluate_scores_the_one_split(tmp_path):
    from engine import evaluate, train

    assert _preprocess("--dataset", "criteo", "--input", SAMPLES / "criteo_sample.tsv",
                       "--out", tmp_path / "data").exit_code == 0
    assert _preprocess("--dataset", "criteo", "--input", SAMPLES / "criteo_sample.csv",
                         "--out", tmp_path / "score",
                       "--split", "none", "--vocab-from", tmp_path / "data").exit_code == 0
    run = tmp_path / "run"
    result = CliRunner().invoke(train.main, ["--data", str(tmp_path / "data"), "--out", str(run), "--bs", "64",
                                             "--max-steps", "2", "--device", "cpu", "--warmup", "0"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(evaluate.main, ["--run", str(run), "--data", str(tmp_path / "score"), "--split", "all",
                                                "--device", "cpu", "--predictions", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.output.strip().splitlines()[-1])
    assert scored["rows"] == 200 and scored["split"] == "all" and 0 <= scored["auc"] <= 1
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 201


def test_train_help_offers_only_splits_that_preprocessing_makes():
    from engine import train

    result = CliRunner().invoke(train.main, ["-h"])
    split_help = result.output[result.output.index("--split"):result.output.index("--device")]
    assert "rand | seq | x4" in split_help and "highfreq is not offered" in split_help


@needs_samples
def test_training_on_a_split_none_dataset_is_refused_with_one_line(tmp_path):
    from engine import train

    assert _preprocess("--dataset", "criteo", "--input", SAMPLES / "criteo_sample.tsv",
                       "--out", tmp_path / "d").exit_code == 0
    assert _preprocess("--dataset", "criteo", "--input", SAMPLES / "criteo_sample.tsv",
                       "--out", tmp_path / "s",
                       "--split", "none", "--vocab-from", tmp_path / "d").exit_code == 0
    result = CliRunner().invoke(train.main, ["--data", str(tmp_path / "s"), "--out", str(tmp_path / "r"),
                                             "--device", "cpu"])
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and len(errors) == 1 and "made with --split none" in errors[0], result.output
