"""Early stopping on a valid split, NE and calibration, --log,
--profile, the model line, the ETA, learning-curve plots and -h on every entry point."""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from engine import train
from engine.run.early_stop import EarlyStopping
from dataio.metrics import calibration, normalized_entropy
from engine.run.progress import eta_seconds, format_duration, numba_kernels_cached

TINY = ["--device", "cpu", "--warmup", "0"]


def _run(args):
    result = CliRunner().invoke(train.main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _records(run_dir, kind):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["type"] == kind]


def test_early_stop_keeps_the_best_and_reports_its_test_metrics(with_valid, tmp_path):
    from engine import evaluate

    out = tmp_path / "r"
    # learning rates 0: the valid AUC never improves after the first evaluation
    output = _run(["--data", with_valid, "--out", str(out), "--bs", "512", "--epoch", "3", "--eval-every", "2",
                   "--early-stop", "2", "--lr", "0", "--lr_embed", "0", *TINY])
    final = json.loads((out / "final_metrics.json").read_text())
    evals = _records(out, "eval")
    assert [e["step"] for e in evals] == [2, 4, 6]            # stopped two evaluations after the best
    assert final["stopped_early"] and final["steps"] == 6 and final["step"] == 2
    assert final["valid_auc"] == evals[0]["valid_auc"] == evals[2]["valid_auc"]
    assert re.search(r"epoch 1/3 \[#+\] \d+/\d+ loss .* ETA \d+s", output)   # the progress line
    assert "[early stop] 2 evaluations without a better valid AUC" in output and "[done] best checkpoint" in output
    # best/ is a run directory engine.evaluate can score: the same test metrics
    assert json.loads((out / "best" / "checkpoint" / "state.json").read_text())["global_step"] == 2
    scored = CliRunner().invoke(evaluate.main, ["--run", str(out / "best"), "--device", "cpu"])
    assert scored.exit_code == 0, scored.output
    again = json.loads(scored.output.strip().splitlines()[-1])
    assert again["auc"] == final["auc"] and again["ne"] == final["ne"] and again["calibration"] == final["calibration"]


def test_early_stop_picks_the_best_of_a_learning_run(with_valid, tmp_path):
    out = tmp_path / "r"
    _run(["--data", with_valid, "--out", str(out), "--bs", "512", "--max-steps", "8", "--eval-every", "2",
          "--early-stop", "100", "--lr_embed", "1e-2", *TINY])
    evals = _records(out, "eval")
    best = max(evals, key=lambda e: e["valid_auc"])          # the first of equals, as the rule is "better"
    final = json.loads((out / "final_metrics.json").read_text())
    assert final["step"] == best["step"] and not final["stopped_early"]
    assert final["auc"] == pytest.approx(best["auc"], abs=1e-12)   # same parameters, same test metrics


def test_early_stopping_counts_evaluations_without_a_better_auc():
    rule = EarlyStopping(patience=2)
    seen = [rule.observe(auc, step) or rule.should_stop for step, auc in enumerate([0.6, 0.7, 0.7, 0.65, 0.8])]
    assert seen == [True, True, False, True, True] and rule.best_step == 4 and not rule.should_stop
    rule.observe(0.5, 5), rule.observe(0.79, 6)
    assert rule.should_stop and rule.best_valid_auc == 0.8


def test_normalized_entropy_and_calibration_by_their_definitions():
    rng = np.random.default_rng(0)
    label = (rng.random(3000) < 0.2).astype(np.float32)
    prob = np.clip(0.2 + 0.3 * (label - 0.2) + 0.1 * rng.standard_normal(3000), 0.01, 0.99).astype(np.float32)
    y, p = label.astype(float).tolist(), prob.astype(float).tolist()
    cross_entropy = sum(-(yi * math.log(pi) + (1 - yi) * math.log(1 - pi)) for yi, pi in zip(y, p))
    ctr = sum(y) / len(y)
    baseline = -sum(y) * math.log(ctr) - (len(y) - sum(y)) * math.log(1 - ctr)
    assert normalized_entropy(label, prob) == pytest.approx(cross_entropy / baseline, rel=1e-12)
    assert calibration(label, prob) == pytest.approx(sum(p) / sum(y), rel=1e-12)
    # predicting the observed CTR everywhere: NE 1, calibrated
    constant = np.full(3000, ctr)
    assert normalized_entropy(label, constant) == pytest.approx(1.0, rel=1e-12)
    assert calibration(label, constant) == pytest.approx(1.0, rel=1e-12)
    assert math.isnan(normalized_entropy(np.ones(4), np.full(4, 0.5)))


def test_log_profile_and_model_line(with_valid, tmp_path, monkeypatch):
    from engine.run.checkpoint import load_checkpoint
    from models import ModelConfig, Schema, build_model
    from dataio.meta import load_meta

    from engine.run import report

    monkeypatch.setattr(report, "PROFILE_STEPS", (3, 5))     # the reference's window is 80-100: too long here
    out = tmp_path / "r"
    output = _run(["--data", with_valid, "--out", str(out), "--bs", "256", "--max-steps", "6", "--log",
                   "--log_freq", "3", "--profile", *TINY])
    model = build_model("deepfm", Schema.from_meta(load_meta(with_valid)), ModelConfig())
    count = sum(p.size for p in model.init_params(0).values())
    assert f"model: deepfm (DeepFM), {count:,} parameters" in output
    profile = (out / "profile.txt").read_text()
    assert profile.startswith("steps 3-5") and "cumulative" in profile and "take_step" in profile
    last = _records(out, "step")[-1]
    assert last["step"] == 6
    params, state, _ = load_checkpoint(out, np.asarray)       # the parameters after step 6
    for name, w in params.items():
        assert last[f"norm.weight.{name}"] == pytest.approx(np.linalg.norm(w.astype(np.float64)), rel=1e-9)
        assert last[f"norm.m.{name}"] == pytest.approx(np.linalg.norm(state.m[name].astype(np.float64)), rel=1e-9)
        assert last[f"norm.v.{name}"] == pytest.approx(np.linalg.norm(state.v[name].astype(np.float64)), rel=1e-9)
        assert 0.0 < last[f"norm.grad.{name}"] < math.inf      # every parameter got a gradient (values: below)


def test_parameter_norms_worked_by_hand():
    from engine.layers.embedding import RowGrad
    from engine.optim import AdamState
    from engine.run.report import parameter_norms

    params = {"w": np.array([3.0, 4.0]), "t": np.array([[1.0, 2.0], [2.0, 4.0], [0.0, 0.0]], dtype=np.float32)}
    # a table's gradient is its batch rows: ids 0 and 2, rows (6, 8) and (0, 0)
    grads = {"w": np.array([0.0, -2.0]), "t": RowGrad(np.array([0, 2]), np.array([[6.0, 8.0], [0.0, 0.0]]),
                                                       np.array([1, 3]))}
    state = AdamState({"w": np.array([1.0, 0.0]), "t": np.full((3, 2), 0.5)},
                      {"w": np.zeros(2), "t": np.ones((3, 2))}, 1)
    norms = parameter_norms(params, grads, state)
    assert norms == {"norm.weight.w": 5.0, "norm.grad.w": 2.0, "norm.m.w": 1.0, "norm.v.w": 0.0,
                     "norm.weight.t": 5.0, "norm.grad.t": 10.0,                  # sqrt(1 + 4 + 4 + 16), sqrt(36 + 64)
                     "norm.m.t": pytest.approx(math.sqrt(1.5), rel=1e-15),      # sqrt(6 * 0.25)
                     "norm.v.t": pytest.approx(math.sqrt(6.0), rel=1e-15)}


def test_eta_and_the_compile_notice(tmp_path):
    assert eta_seconds(0, 10, 0.0) is None
    assert eta_seconds(4, 10, 8.0) == pytest.approx(12.0)
    assert [format_duration(s) for s in (5, 75, 3725)] == ["5s", "1m15s", "1h02m"]
    assert not numba_kernels_cached([tmp_path])
    (tmp_path / "adam.adam_rows_cpu-100.py311.nbi").write_bytes(b"")
    assert numba_kernels_cached([tmp_path])


def test_plot_draws_runs_overlaid(with_valid, tmp_path):
    pytest.importorskip("matplotlib")
    from engine import plot

    runs = []
    for lr_embed in ("1e-3", "1e-2"):
        runs.append(str(tmp_path / f"r{lr_embed}"))
        _run(["--data", with_valid, "--out", runs[-1], "--bs", "512", "--max-steps", "4", "--eval-every", "2",
              "--log-every", "1", "--lr_embed", lr_embed, *TINY])
    png = tmp_path / "curves.png"
    result = CliRunner().invoke(plot.main, [*runs, "--out", str(png)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    bad = CliRunner().invoke(plot.main, [str(tmp_path), "--out", str(png)])
    assert bad.exit_code != 0 and "metrics.jsonl: not found" in bad.output and "Traceback" not in bad.output


ENTRY_PACKAGES = ("dataio", "engine", "models", "validate")
REPO = Path(__file__).resolve().parents[1]


def entry_point_modules() -> list:
    """Every module of the packages that runs as `python -m` (has an `if __name__ == "__main__":` block)."""
    found = []
    for package in ENTRY_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if re.search(r'^if __name__ == "__main__":', path.read_text(encoding="utf-8"), re.MULTILINE):
                found.append(".".join(path.relative_to(REPO).with_suffix("").parts))
    return found


# runs `python -m MODULE FLAG` for both flags in one interpreter: -> {flag: [exit code, stdout]}
HELP_PROBE = r"""
import contextlib, io, json, runpy, sys
module, answers = sys.argv[1], {}
for flag in ("-h", "--help"):
    sys.argv, out, code = [module, flag], io.StringIO(), None
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as exit:
            code = exit.code
    answers[flag] = [code, out.getvalue()]
print(json.dumps(answers))
"""


def test_the_entry_point_walk_finds_the_documented_commands():
    assert {"engine.train", "engine.evaluate", "engine.plot", "dataio.preprocess", "validate.audit.gradcheck",
            "validate.audit.explain", "validate.study.scaling", "validate.speed.bench"} <= set(entry_point_modules())


@pytest.mark.parametrize("module", entry_point_modules())
def test_help_on_every_entry_point(module):
    result = subprocess.run([sys.executable, "-c", HELP_PROBE, module], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    for flag, (code, output) in json.loads(result.stdout.splitlines()[-1]).items():
        assert code in (0, None) and output.startswith(f"Usage: python -m {module} "), (flag, code, output)
        assert "checks, worst" not in output            # gradcheck's --help does not run the check
