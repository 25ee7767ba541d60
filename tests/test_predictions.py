"""engine.evaluate --predictions: row index, label and probability in the format the suffix names;
unknown suffixes and missing directories refused with one line, before any scoring."""
import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from engine import evaluate, train
from engine.run.predictions import write_predictions

LABEL = np.array([1, 0, 0, 1], dtype=np.float32)
PROB = np.array([0.25, 1 / 3, 0.1, 0.9999999999999999])


def test_npy_is_a_structured_array_of_row_label_prob(tmp_path):
    path = write_predictions(tmp_path / "p.npy", LABEL, PROB)
    rows = np.load(path)
    assert rows.dtype.names == ("row", "label", "prob")
    assert rows["row"].tolist() == [0, 1, 2, 3] and rows["label"].tolist() == [1, 0, 0, 1]
    assert np.array_equal(rows["prob"], PROB)                    # float64, bit for bit


def test_csv_has_a_header_and_exact_probabilities(tmp_path):
    path = write_predictions(tmp_path / "p.csv", LABEL, PROB)
    with open(path) as f:
        table = list(csv.DictReader(f))
    assert [int(r["row"]) for r in table] == [0, 1, 2, 3] and [int(r["label"]) for r in table] == [1, 0, 0, 1]
    assert np.array_equal([float(r["prob"]) for r in table], PROB)


def test_parquet_when_a_writer_is_installed(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(write_predictions(tmp_path / "p.parquet", LABEL, PROB)).to_pydict()
    assert table["row"] == [0, 1, 2, 3] and np.array_equal(table["prob"], PROB)


@pytest.mark.parametrize("name,says", [("p.bin", "unknown format '.bin'"), ("p", "unknown format '(no suffix)'"),
                                       ("missing/p.npy", "does not exist")])
def test_bad_prediction_paths_are_refused_before_scoring(tmp_path, name, says):
    result = CliRunner().invoke(evaluate.main, ["--run", str(tmp_path), "--predictions", str(tmp_path / name)])
    assert result.exit_code == 1 and says in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []      # nothing written, not p.bin.npy


def test_a_scored_run_writes_each_row_once_in_every_format(tmp_path):
    from dataio.reader import read_split
    from dataio.synthetic import generate

    data = generate(tmp_path / "syn", rows=2000, seed=6, min_vocab=3, max_vocab=40)
    out = tmp_path / "run"
    result = CliRunner().invoke(train.main, ["--data", str(data), "--out", str(out), "--bs", "512",
                                             "--max-steps", "2", "--device", "cpu", "--warmup", "0"])
    assert result.exit_code == 0, result.output
    probs = {}
    for suffix in (".npy", ".csv"):
        path = tmp_path / f"p{suffix}"
        result = CliRunner().invoke(evaluate.main, ["--run", str(out), "--device", "cpu", "--predictions", str(path)])
        assert result.exit_code == 0, result.output
        if suffix == ".npy":
            rows = np.load(path)
            row, label, probs[suffix] = rows["row"], rows["label"], rows["prob"]
        else:
            table = np.loadtxt(path, delimiter=",", skiprows=1)
            row, label, probs[suffix] = table[:, 0], table[:, 1], table[:, 2]
        test = read_split(data, "test")
        scored = json.loads(result.output.strip().splitlines()[-1])
        assert len(row) == scored["rows"] == len(test["label"])
        assert np.array_equal(row, np.arange(len(row))) and np.array_equal(label, test["label"])
    assert np.array_equal(probs[".npy"], probs[".csv"])


def test_an_existing_file_is_kept_unless_overwrite(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("mine\n")
    result = CliRunner().invoke(evaluate.main, ["--run", str(tmp_path), "--predictions", str(path)])
    assert result.exit_code == 1 and "the file exists; pass --overwrite" in result.output
    assert path.read_text() == "mine\n"
    write_predictions(path, LABEL, PROB, overwrite=True)
    assert path.read_text().startswith("row,label,prob\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]       # no temporary file left
