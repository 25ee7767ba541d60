"""Early stopping says on the console the valid AUC it decides on, and two evaluations at one global step
count once toward patience."""
import json
import re

from click.testing import CliRunner

from engine import train
from engine.run.early_stop import EarlyStopping


def test_a_second_evaluation_at_the_same_step_counts_once():
    early = EarlyStopping(patience=2)
    assert early.observe(0.70, 4)
    assert not early.observe(0.69, 8) and early.since_best == 1
    assert not early.observe(0.69, 8) and early.since_best == 1 and not early.should_stop
    assert not early.observe(0.68, 12) and early.should_stop


def test_the_saved_state_keeps_the_last_step(tmp_path):
    early = EarlyStopping(patience=3)
    early.observe(0.7, 5)
    early.save(tmp_path)
    again = EarlyStopping.load_or_new(tmp_path, 3)
    assert not again.observe(0.6, 5) and again.since_best == 0


def test_the_eval_line_prints_the_valid_auc_early_stopping_decides_on(tmp_path):
    from dataio.synthetic import generate

    data = generate(tmp_path / "d", rows=3000, seed=5, min_vocab=3, max_vocab=50, valid_fraction=0.2)
    out = tmp_path / "r"
    result = CliRunner().invoke(train.main, ["--data", str(data), "--out", str(out), "--bs", "512", "--epoch", "2",
                                             "--eval-every", "2", "--early-stop", "3", "--device", "cpu",
                                             "--warmup", "0"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    printed = [float(m.group(1)) for m in re.finditer(r"^\[eval\].*?: valid AUC ([0-9.]+) \(best", result.output, re.M)]
    logged = [r["valid_auc"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
              if r["type"] == "eval"]
    assert len(printed) == len(logged) > 2
    assert [round(v, 5) for v in logged] == printed
