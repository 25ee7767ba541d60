"""The main job end to end on a tiny synthetic set: every model, resume, accumulation, errors."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from dataio.schema import Batch
from engine import train
from engine.accumulate import accumulated_loss_and_grads
from engine.backend import get_backend
from engine.run.checkpoint import load_checkpoint
from dataio.metrics import auc, logloss
from models import ModelConfig, Schema, build_model
from validate.audit.gradcheck import check_batch

TINY = ["--bs", "512", "--epoch", "2", "--device", "cpu", "--log-every", "1"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from dataio.synthetic import generate

    return str(generate(tmp_path_factory.mktemp("data") / "tiny", rows=6000, seed=3, min_vocab=3, max_vocab=300))


def _invoke(args):
    result = CliRunner().invoke(train.main, args, catch_exceptions=False)
    return result


def _records(run_dir, kind):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


# the reference's spellings and ours, case-insensitive (its DCNv2 is DCNMix; full-rank DCN-v2 is dcnv2full)
@pytest.mark.parametrize("name", ["LR", "FM", "WD", "DeepFM", "DCN", "DCNv2", "dcnv2full"])
def test_cli_trains_every_model(tiny_data, tmp_path, name):
    out = tmp_path / "run"
    result = _invoke(["--model", name, "--data", tiny_data, "--out", str(out), "--lr_embed", "1e-2", *TINY])
    assert result.exit_code == 0, result.output
    for f in ("config.json", "metrics.jsonl", "final_metrics.json", "checkpoint/arrays.npz", "checkpoint/state.json"):
        assert (out / f).exists(), f
    final = json.loads((out / "final_metrics.json").read_text())
    assert np.isfinite(final["auc"]) and np.isfinite(final["logloss"]) and final["auc"] > 0.5
    steps = _records(out, "step")
    assert np.isfinite([s["loss"] for s in steps]).all()
    assert np.mean([s["loss"] for s in steps[-3:]]) < np.mean([s["loss"] for s in steps[:3]])  # the loss falls
    assert "Bayes-optimal" in result.output and "hyperparameters:" in result.output


def test_resume_ends_bitwise_equal_to_an_uninterrupted_run(tiny_data, tmp_path):
    common = ["--model", "deepfm", "--data", tiny_data, "--dropout", "0.1", "--audit", *TINY]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert _invoke([*common, "--out", str(whole)]).exit_code == 0
    # "kill" after 7 steps (mid-epoch: 10 steps per epoch), then resume to the end
    assert _invoke([*common, "--out", str(parts), "--max-steps", "7"]).exit_code == 0
    assert json.loads((parts / "checkpoint" / "state.json").read_text())["global_step"] == 7
    result = _invoke(["--resume", "--out", str(parts), "--max-steps", "0"])   # lifts the stop: every epoch
    assert result.exit_code == 0, result.output
    p1, s1, i1 = load_checkpoint(whole, np.asarray)
    p2, s2, i2 = load_checkpoint(parts, np.asarray)
    assert i1["global_step"] == i2["global_step"] > 7
    for name in p1:
        assert np.array_equal(p1[name], p2[name]), name
        assert np.array_equal(s1.m[name], s2.m[name]) and np.array_equal(s1.v[name], s2.v[name]), name


def test_accumulated_micro_batches_equal_the_big_batch():
    model = build_model("dcn", Schema((4, 12, 1, 6), 3),
                        ModelConfig(embed_dim=3, dnn_hidden=(5,), cross_layers=2, init_stddev=0.3, dtype="float64"))
    params = model.init_params(0)
    parts = [check_batch(seed) for seed in range(3)]
    batch = Batch(*(np.concatenate([getattr(p, k) for p in parts]) for k in Batch._fields))
    kernels = get_backend("cpu")
    loss, grads = model.loss(params, batch, kernels)
    loss4, grads4 = accumulated_loss_and_grads(model, params, batch, 4, kernels)
    assert loss4 == pytest.approx(loss, rel=1e-12)
    for name, g in grads.items():
        g4 = grads4[name]
        if hasattr(g, "rows"):
            o, o4 = np.argsort(g.ids), np.argsort(g4.ids)
            assert np.array_equal(g.ids[o], g4.ids[o4]) and np.array_equal(g.counts[o], g4.counts[o4])
            np.testing.assert_allclose(g4.rows[o4], g.rows[o], rtol=1e-12, atol=1e-15)
        else:
            np.testing.assert_allclose(g4, g, rtol=1e-12, atol=1e-15)


def test_cli_accum_runs(tiny_data, tmp_path):
    result = _invoke(["--model", "deepfm", "--data", tiny_data, "--out", str(tmp_path / "r"), "--accum", "4",
                      "--max-steps", "3", *TINY])
    assert result.exit_code == 0, result.output
    assert "accum 4" in result.output


def test_device_cuda_without_a_gpu_fails_with_one_line(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr("engine.backend.cuda_unavailable_reason", lambda: "no CUDA device here")
    result = CliRunner().invoke(train.main, ["--data", tiny_data, "--out", str(tmp_path / "r"), "--device", "cuda"])
    assert result.exit_code != 0
    assert "--device cuda: no CUDA device here" in result.output and "Traceback" not in result.output
    result = _invoke(["--data", tiny_data, "--out", str(tmp_path / "a"), "--max-steps", "1", "--bs", "512",
                      "--device", "auto"])
    assert result.exit_code == 0 and "device: cpu (auto: no CUDA device here)" in result.output


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    from models.base import CTRModel

    real_loss, calls = CTRModel.loss, []

    def failing_loss(self, *args, **kwargs):
        calls.append(1)
        loss, grads = real_loss(self, *args, **kwargs)
        return (float("nan") if len(calls) == 4 else loss), grads

    monkeypatch.setattr(CTRModel, "loss", failing_loss)
    out = tmp_path / "r"
    result = CliRunner().invoke(train.main, ["--data", tiny_data, "--out", str(out), "--checkpoint-every", "1", *TINY])
    assert result.exit_code != 0
    assert "non-finite loss (nan) at global step 4" in result.output and "Traceback" not in result.output
    assert json.loads((out / "checkpoint" / "state.json").read_text())["global_step"] == 3


def test_auc_equals_scikit_learn_with_ties():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, 5000).astype(np.float32)
    score = np.round(rng.random(5000) + 0.3 * label, 2)   # many tied scores
    assert abs(auc(label, score) - sklearn.roc_auc_score(label, score)) < 1e-9
    prob = np.clip(score / score.max(), 1e-6, 1 - 1e-6)
    assert abs(logloss(label, prob) - sklearn.log_loss(label, prob)) < 1e-9


def test_evaluate_scores_a_checkpoint(tiny_data, tmp_path):
    from engine import evaluate

    out = tmp_path / "r"
    assert _invoke(["--data", tiny_data, "--out", str(out), "--max-steps", "2", *TINY]).exit_code == 0
    predictions = tmp_path / "p.npy"
    result = CliRunner().invoke(evaluate.main, ["--run", str(out), "--device", "cpu", "--predictions", str(predictions)])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.output.strip().splitlines()[-1])
    assert 0.0 <= scored["auc"] <= 1.0 and scored["global_step"] == 2
    assert np.load(predictions).shape == (scored["rows"],)
