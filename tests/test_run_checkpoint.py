"""Checkpoints are whole, finite and the model's: an interrupted swap is finished or rolled back,
and a resumed run continues the run that was started (engine/run/checkpoint.py, engine/run/cli.py)."""
import json
import shutil

import numpy as np
import pytest

from engine import evaluate as evaluate_cli
from engine import train
from engine.run.checkpoint import CheckpointError, is_complete, load_checkpoint, recover_checkpoint, save_checkpoint
from engine.optim import AdamState
from models import ModelConfig, Schema, build_model
from run_cases import checkpointed_run, base, data, invoke, steps_logged, trained  # noqa: F401 (tests/; data is a fixture)


def test_no_non_finite_checkpoint_and_the_message_names_a_real_one(data, tmp_path):
    out = tmp_path / "r"
    for every in ("1", "5"):
        result = invoke(train.main, [*base(data), "--lr", "1e39", "--lr_embed", "1e39", "--checkpoint-every", every,
                                     "--out", out, "--overwrite"])
        assert result.exit_code == 1 and "hold inf or nan" in result.output and "global step 1 " in result.output
        assert "no checkpoint had been written yet" in result.output
        assert not (out / "checkpoint").exists()
    # save_checkpoint refuses a poisoned state, and evaluate refuses a checkpoint that holds one anyway
    good = tmp_path / "good"
    trained(data, good, "--max-steps", "2")
    params, state, info = load_checkpoint(good, np.asarray)
    params["bias"][0] = np.nan
    with pytest.raises(CheckpointError, match="inf or nan"):
        save_checkpoint(good, params, state, info, info["rng"], np.asarray)
    arrays = dict(np.load(good / "checkpoint" / "arrays.npz"))
    arrays["m/linear.table"][3] = np.inf
    np.savez(good / "checkpoint" / "arrays.npz", **arrays)
    result = invoke(evaluate_cli.main, ["--run", good, "--device", "cpu"])
    assert result.exit_code == 1 and "m/linear.table" in result.output and "inf or nan" in result.output


def test_a_kill_between_the_two_renames_is_recovered(data, tmp_path):
    out = checkpointed_run(data, tmp_path)
    shutil.copytree(out / "checkpoint", out / "checkpoint.tmp")      # the new one, complete
    (out / "checkpoint").rename(out / "checkpoint.old")             # first rename done, second not
    result = invoke(train.main, ["--resume", "--out", out, "--max-steps", "3"])
    assert result.exit_code == 0, result.output
    assert "finished an interrupted checkpoint swap" in result.output
    assert json.loads((out / "checkpoint" / "state.json").read_text())["global_step"] == 3
    assert not (out / "checkpoint.tmp").exists() and not (out / "checkpoint.old").exists()


def test_a_partial_checkpoint_tmp_is_removed_on_the_next_start(data, tmp_path):
    out = checkpointed_run(data, tmp_path)
    (out / "checkpoint.tmp").mkdir()
    arrays = (out / "checkpoint" / "arrays.npz").read_bytes()
    (out / "checkpoint.tmp" / "arrays.npz").write_bytes(arrays[: len(arrays) // 2])   # the disk filled up
    assert not is_complete(out / "checkpoint.tmp") and is_complete(out / "checkpoint")
    result = invoke(train.main, ["--resume", "--out", out, "--max-steps", "3"])
    assert result.exit_code == 0, result.output
    assert "removed a partial checkpoint.tmp" in result.output and not (out / "checkpoint.tmp").exists()


def test_recovery_table(data, tmp_path):
    """Each state a cut-off swap can leave -> what recover_checkpoint makes of it."""
    src = checkpointed_run(data, tmp_path) / "checkpoint"
    partial = lambda p: (p.mkdir(), (p / "arrays.npz").write_bytes(b"PK\x03\x04 cut"))  # noqa: E731
    states = {  # name: (make the state, what is left as checkpoint: "good" or None)
        "tmp complete, old": (lambda d: (shutil.copytree(src, d / "checkpoint.tmp"),
                                         shutil.copytree(src, d / "checkpoint.old")), "good"),
        "tmp partial, old": (lambda d: (partial(d / "checkpoint.tmp"), shutil.copytree(src, d / "checkpoint.old")),
                             "good"),
        "checkpoint, tmp partial": (lambda d: (shutil.copytree(src, d / "checkpoint"),
                                               partial(d / "checkpoint.tmp")), "good"),
        "tmp partial only": (lambda d: partial(d / "checkpoint.tmp"), None),
    }
    for name, (make, expect) in states.items():
        d = tmp_path / name.replace(" ", "_").replace(",", "")
        d.mkdir()
        make(d)
        recover_checkpoint(d)
        assert sorted(p.name for p in d.iterdir()) == (["checkpoint"] if expect else []), name
        if expect:
            assert is_complete(d / "checkpoint"), name


def test_load_checkpoint_checks_names_and_shapes(data, tmp_path):
    lr_run, fm_run = tmp_path / "lr", tmp_path / "fm"
    trained(data, lr_run, "--max-steps", "1")
    trained(data, fm_run, "--max-steps", "1", "--model", "fm", "--overwrite")
    shutil.rmtree(lr_run / "checkpoint")
    shutil.copytree(fm_run / "checkpoint", lr_run / "checkpoint")   # the other process's checkpoint
    result = invoke(evaluate_cli.main, ["--run", lr_run, "--device", "cpu"])
    assert result.exit_code == 1 and "does not match the model" in result.output
    # same names, another shape (a larger embedding): refused too
    model = build_model("fm", Schema((5, 6), 2), ModelConfig(embed_dim=4))
    params = model.init_params(0)
    save_checkpoint(tmp_path / "c", params, AdamState.zeros_like(params, np), {"epoch": 0, "step_in_epoch": 0,
                    "global_step": 0}, None, np.asarray)
    wider = build_model("fm", Schema((5, 6), 2), ModelConfig(embed_dim=5))
    with pytest.raises(CheckpointError, match=r"embed.table has shape \(11, 4\), the model needs \(11, 5\)"):
        load_checkpoint(tmp_path / "c", np.asarray, wider.param_shapes())


def test_resume_of_a_finished_run_is_a_one_line_error(data, tmp_path):
    out = tmp_path / "r"
    trained(data, out)
    result = invoke(train.main, ["--resume", "--out", out])
    assert result.exit_code == 1 and "already finished" in result.output




def test_resume_at_or_past_max_steps_takes_no_step(data, tmp_path):
    out = tmp_path / "r"
    trained(data, out, "--max-steps", "3", "--log-every", "1")
    before = (out / "checkpoint" / "arrays.npz").read_bytes()
    for n in ("3", "2"):
        (out / "final_metrics.json").unlink()   # as if killed before its last phase: not finished
        result = invoke(train.main, ["--resume", "--out", out, "--max-steps", n])
        assert result.exit_code == 0, result.output
        assert "no step taken" in result.output and "3 steps" in result.output
        assert json.loads((out / "checkpoint" / "state.json").read_text())["global_step"] == 3
        assert (out / "checkpoint" / "arrays.npz").read_bytes() == before
    assert steps_logged(out) == [1, 2, 3]


def test_resume_refuses_conflicting_flags_naming_each(data, tmp_path):
    out = tmp_path / "r"
    trained(data, out, "--max-steps", "2")
    result = invoke(train.main, ["--resume", "--out", out, "--bs", "2048", "--model", "deepfm", "--lr", "0.5"])
    assert result.exit_code == 1
    for named in ("--bs 2048 (run has 512)", "--model deepfm (run has lr)", "--lr 0.5 (run has"):
        assert named in result.output
    assert json.loads((out / "checkpoint" / "state.json").read_text())["global_step"] == 2
    # the run's own values, spelled again, are no conflict; --max-steps may change
    same = invoke(train.main, ["--resume", "--out", out, "--bs", "512", "--model", "LR", "--max-steps", "3"])
    assert same.exit_code == 0, same.output
    assert json.loads((out / "checkpoint" / "state.json").read_text())["global_step"] == 3
