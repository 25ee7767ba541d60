"""engine.evaluate scores only data that matches the run, and an undefined AUC is null with its
reason in valid JSON (engine/evaluate.py)."""
import json
import shutil

import numpy as np
import pytest

from engine import evaluate as evaluate_cli
from engine import train
from run_cases import checkpointed_run, base, data, invoke, strict_json, trained  # noqa: F401 (tests/; data is a fixture)


def test_evaluate_refuses_data_that_does_not_match_the_run(data, tmp_path):
    from dataio.synthetic import generate

    out = checkpointed_run(data, tmp_path)
    other = generate(tmp_path / "other", rows=500, seed=4, min_vocab=3, max_vocab=50)
    result = invoke(evaluate_cli.main, ["--run", out, "--data", other, "--device", "cpu"])
    assert result.exit_code == 1 and "vocabulary sizes differ" in result.output
    ok = invoke(evaluate_cli.main, ["--run", out, "--data", data, "--device", "cpu"])
    assert ok.exit_code == 0, ok.output
    # the run's own dataset directory, rebuilt since: refused by its fingerprint
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    run2 = tmp_path / "r2"
    trained(str(copy), run2, "--max-steps", "1")
    (copy / "meta.json").write_text((copy / "meta.json").read_text() + " ")
    result = invoke(evaluate_cli.main, ["--run", run2, "--device", "cpu"])
    assert result.exit_code == 1 and "rebuilt since" in result.output


def test_undefined_auc_is_null_with_a_reason_in_valid_json(data, tmp_path, monkeypatch):
    import dataio.reader

    real = dataio.reader.read_split

    def all_negative(data_dir, split):
        arrays = real(data_dir, split)
        arrays["label"] = np.zeros_like(arrays["label"])
        return arrays

    monkeypatch.setattr(dataio.reader, "read_split", all_negative)
    out = tmp_path / "r"
    result = invoke(train.main, [*base(data), "--max-steps", "2", "--out", out])
    assert result.exit_code == 0, result.output
    assert "AUC undefined (all" in result.output
    final = strict_json((out / "final_metrics.json").read_text())
    assert final["auc"] is None and "labels are 0" in final["auc_undefined"]
    for line in (out / "metrics.jsonl").read_text().splitlines():
        strict_json(line)
    scored = invoke(evaluate_cli.main, ["--run", out, "--device", "cpu"])
    assert scored.exit_code == 0, scored.output
    printed = strict_json(scored.output.strip().splitlines()[-1])
    assert printed["auc"] is None and "labels are 0" in printed["auc_undefined"]


@pytest.mark.parametrize("labels,reason", [([], "no rows"), ([0, 0, 0], "all 3 labels are 0"),
                                           ([1], "all 1 labels are 1"), ([1, 1], "all 2 labels are 1")])
def test_why_auc_is_undefined(labels, reason):
    from engine.evaluate import json_safe, scores

    label = np.asarray(labels, dtype=np.float32)
    result = scores(label, np.full(label.shape, 0.4))
    assert result["auc"] is None and reason in result["auc_undefined"]
    strict_json(json.dumps(json_safe(result), allow_nan=False))
    assert scores(np.asarray([0, 1], np.float32), np.asarray([0.2, 0.7]))["auc"] == 1.0
