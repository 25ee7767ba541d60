"""A run that cannot go well stops at once, naming why: divergence at its step, a train split
that cannot make a batch, a clip threshold that is zero everywhere (engine/run/guards.py)."""
import json
from pathlib import Path

import numpy as np
import pytest

from engine import train
from engine.run.guards import LOSS_LIMIT, loss_problem, zero_clip_warning
from run_cases import base, data, invoke  # noqa: F401 (tests/; data is a fixture)


def test_divergence_with_a_finite_loss_stops_at_its_step(data, tmp_path):
    result = invoke(train.main, [*base(data), "--epoch", "2", "--lr", "1e3", "--lr_embed", "1e3", "--warmup", "0",
                                 "--out", tmp_path / "r"])
    assert result.exit_code == 1
    assert "exploding loss" in result.output and "at global step 2 " in result.output
    # the rule itself: finite but above 100 ln 2 stops; a plausible loss does not
    assert LOSS_LIMIT == pytest.approx(69.31, abs=0.01)
    assert loss_problem(0.69) is None and loss_problem(60.0) is None
    assert "exploding" in loss_problem(1e9) and "non-finite" in loss_problem(float("inf"))


def test_an_inf_adam_moment_stops_the_run(data, tmp_path, monkeypatch):
    """A moment of inf does not show in the loss (Adam divides by sqrt(v)): the arrays are checked."""
    import engine.train as train_module

    real, calls = train_module.apply_gradients, []

    def poisoned(model, params, grads, state, *args, **kwargs):
        info = real(model, params, grads, state, *args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            state.v["bias"][...] = np.inf
        return info

    monkeypatch.setattr(train_module, "apply_gradients", poisoned)
    out = tmp_path / "r"
    result = invoke(train.main, [*base(data), "--out", out, "--checkpoint-every", "2"])
    assert result.exit_code == 1 and "v/bias" in result.output and "at global step 3 " in result.output
    assert "last good checkpoint (global step 2)" in result.output
    assert json.loads((out / "checkpoint" / "state.json").read_text())["global_step"] == 2


def test_empty_train_split_and_a_batch_larger_than_it_are_refused(data, tmp_path):
    from dataio.meta import load_meta
    from dataio.reader import read_split
    from dataio.writer import DatasetWriter

    # dataio refuses to make such a set (dataio.synthetic, preprocessing); one written by other means,
    # here by its writer with the data's meta and an empty train split, must be refused by training
    meta, test = load_meta(data), read_split(data, "test")
    F, D = test["sparse"].shape[1], test["dense"].shape[1]
    with DatasetWriter(tmp_path / "empty", {"train": 0, "test": 5}, F, D) as writer:
        writer.append("test", test["sparse"][:5], test["dense"][:5], test["label"][:5])
        empty = writer.finish({k: v for k, v in meta.items() if k not in ("splits", "format_version")})
    assert json.loads((empty / "meta.json").read_text())["splits"]["train"]["rows"] == 0
    result = invoke(train.main, [*base(str(empty)), "--out", tmp_path / "a"])
    assert result.exit_code == 1 and "train split has no rows" in result.output
    rows = json.loads((Path(data) / "meta.json").read_text())["splits"]["train"]["rows"]
    result = invoke(train.main, [*base(data), "--bs", str(rows + 1), "--out", tmp_path / "b"])
    assert result.exit_code == 1 and f"larger than the {rows} training rows" in result.output
    assert not (tmp_path / "b" / "config.json").exists()


def test_a_zero_clip_threshold_is_warned_about(data, tmp_path):
    args = [*base(data), "--model", "fm", "--clip-form", "paper", "--bound", "0", "--clip", "1", "--init_stddev", "0",
            "--max-steps", "1", "--out", tmp_path / "r"]
    result = invoke(train.main, args)
    assert result.exit_code == 0, result.output
    assert "CowClip threshold zero" in result.output
    assert zero_clip_warning(1.0, 1e-5, 0.0, True) is None and zero_clip_warning(0.0, 0.0, 0.0, True) is None
