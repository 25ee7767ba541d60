"""The training-side cases of issues 15 and 19 (hostile runs): each test names its case, and each
fails on the code before the fix (a traceback, a silent exit 0, or lost data).

Runs use the LR model on a 3,000-row synthetic set (6 steps an epoch at --bs 512): seconds each.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from engine import evaluate as evaluate_cli
from engine import train
from engine.run.checkpoint import CheckpointError, is_complete, load_checkpoint, recover_checkpoint, save_checkpoint
from engine.run.footprint import estimate
from engine.run.guards import LOSS_LIMIT, loss_problem, zero_clip_warning
from engine.optim import AdamState
from engine.run.directory import locked, truncate_metrics
from models import MODELS, ModelConfig, Schema, build_model


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from dataio.synthetic import generate

    return str(generate(tmp_path_factory.mktemp("data") / "tiny", rows=3000, seed=3, min_vocab=3, max_vocab=100))


def base(data):
    return ["--model", "lr", "--data", data, "--bs", "512", "--epoch", "1", "--device", "cpu"]


def invoke(main, args):
    """Run a command as a user would; a user mistake must end in a one-line error, never a traceback."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exit_code != 0:
        assert isinstance(result.exception, SystemExit), f"traceback: {result.exception!r}\n{result.output}"
        assert "Traceback" not in result.output
    return result


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, which are not JSON."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def steps_logged(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["step"] for r in map(json.loads, lines) if r["type"] == "step"]


def trained(data, out, *more):
    result = invoke(train.main, [*base(data), "--out", out, *more])
    assert result.exit_code == 0, result.output
    return result


# ---------------------------------------------------------------------------------------------------
# issue 15


def test_15_3_an_existing_run_is_refused_without_overwrite(data, tmp_path):
    out = tmp_path / "run"
    first = trained(data, out, "--max-steps", "2")
    assert f"run directory: {out}" in first.output
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for more in ([], ["--data", str(tmp_path / "no-such-data")]):   # also when the new run would fail at once
        result = invoke(train.main, [*base(data), "--out", out, *more])
        assert result.exit_code == 1 and "holds a run already" in result.output and "--overwrite" in result.output
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # a user's folder is never a run directory, with or without --overwrite
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for more in ([], ["--overwrite"]):
        result = invoke(train.main, [*base(data), "--out", mine, *more])
        assert result.exit_code == 1 and "not a run directory" in result.output
    assert (mine / "notes.txt").read_text() == "keep me" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    # --overwrite replaces the run on purpose
    replaced = trained(data, out, "--max-steps", "1", "--log-every", "1", "--overwrite")
    assert f"run directory: {out}" in replaced.output
    assert json.loads((out / "checkpoint" / "state.json").read_text())["global_step"] == 1
    assert steps_logged(out) == [1]


def test_15_4_divergence_with_a_finite_loss_stops_at_its_step(data, tmp_path):
    result = invoke(train.main, [*base(data), "--epoch", "2", "--lr", "1e3", "--lr_embed", "1e3", "--warmup", "0",
                                 "--out", tmp_path / "r"])
    assert result.exit_code == 1
    assert "exploding loss" in result.output and "at global step 2 " in result.output
    # the rule itself: finite but above 100 ln 2 stops; a plausible loss does not
    assert LOSS_LIMIT == pytest.approx(69.31, abs=0.01)
    assert loss_problem(0.69) is None and loss_problem(60.0) is None
    assert "exploding" in loss_problem(1e9) and "non-finite" in loss_problem(float("inf"))


def test_15_4_an_inf_adam_moment_stops_the_run(data, tmp_path, monkeypatch):
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


def test_15_5_no_non_finite_checkpoint_and_the_message_names_a_real_one(data, tmp_path):
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


def test_15_6_resume_refuses_conflicting_flags_naming_each(data, tmp_path):
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


def test_15_7_resume_refuses_a_dataset_rebuilt_since(data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    out = tmp_path / "r"
    trained(str(copy), out, "--max-steps", "2")
    assert json.loads((out / "config.json").read_text())["data_fingerprint"].startswith("sha256:")
    meta = json.loads((copy / "meta.json").read_text())
    meta["source"] = {**meta.get("source", {}), "note": "re-preprocessed"}
    (copy / "meta.json").write_text(json.dumps(meta))
    result = invoke(train.main, ["--resume", "--out", out, "--max-steps", "4"])   # 2 more steps
    assert result.exit_code == 1 and "dataset changed" in result.output
    assert json.loads((out / "checkpoint" / "state.json").read_text())["global_step"] == 2


BAD_OPTIONS = [  # (case, option, value): each is a click usage error naming the option (exit 2)
    ("15.8", "--lr", "-1"), ("15.8", "--lr_embed", "-1"), ("15.8", "--l2", "-0.5"), ("15.8", "--dropout", "1.5"),
    ("15.8", "--dropout", "1"), ("15.8", "--max-steps", "-5"), ("15.8", "--lr", "nan"), ("15.8", "--clip", "inf"),
    ("15.13", "--epoch", "0"), ("15.13", "--epoch", "-2"), ("15.13", "--log-every", "0"), ("15.13", "--base-bs", "0"),
    ("15.13", "--bs", "-256"), ("15.13", "--bs", "0"), ("15.13", "--sparse_embed_dim", "0"),
    ("15.13", "--init_stddev", "-1"), ("15.13", "--seed", "-1"), ("15.13", "--accum", "0"),
    ("15.13", "--eval-every", "-1"), ("15.13", "--checkpoint-every", "-1"), ("15.13", "--warmup", "-1"),
]


@pytest.mark.parametrize("case,option,value", BAD_OPTIONS)
def test_15_8_and_13_numeric_options_are_range_checked(data, tmp_path, case, option, value):
    out = tmp_path / "r"
    result = invoke(train.main, [*base(data), "--out", out, option, value])
    assert result.exit_code == 2, result.output
    assert option in result.output.splitlines()[-1] and "Invalid value" in result.output
    assert not out.exists()


def test_15_11_resume_cuts_the_log_back_to_the_checkpoint(data, tmp_path, monkeypatch):
    from models.base import CTRModel

    out = tmp_path / "r"
    real, calls = CTRModel.loss, []

    def killed_at_step_6(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt   # stands in for kill -9 after step 5, the checkpoint being at step 4
        return real(self, *args, **kwargs)

    monkeypatch.setattr(CTRModel, "loss", killed_at_step_6)
    args = [*base(data), "--epoch", "2", "--log-every", "1", "--checkpoint-every", "2"]
    assert invoke(train.main, [*args, "--out", out]).exit_code != 0
    assert steps_logged(out) == [1, 2, 3, 4, 5]
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"type": "step", "ep')        # and a torn last line
    monkeypatch.setattr(CTRModel, "loss", real)
    result = invoke(train.main, ["--resume", "--out", out])
    assert result.exit_code == 0, result.output
    assert "dropped 2 metrics.jsonl line(s)" in result.output
    assert steps_logged(out) == list(range(1, 13))      # each step once


def test_15_11_truncate_keeps_records_up_to_the_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"type": t, "step": s}) + "\n" for t, s in
                            [("step", 1), ("step", 2), ("eval", 2), ("step", 3), ("eval", 3)]) + '{"ty')
    assert truncate_metrics(path, 2) == 3
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 2]


def _checkpointed_run(data, tmp_path):
    out = tmp_path / "r"
    trained(data, out, "--max-steps", "2")
    return out


def test_15_12_a_kill_between_the_two_renames_is_recovered(data, tmp_path):
    out = _checkpointed_run(data, tmp_path)
    shutil.copytree(out / "checkpoint", out / "checkpoint.tmp")      # the new one, complete
    (out / "checkpoint").rename(out / "checkpoint.old")             # first rename done, second not
    result = invoke(train.main, ["--resume", "--out", out, "--max-steps", "3"])
    assert result.exit_code == 0, result.output
    assert "finished an interrupted checkpoint swap" in result.output
    assert json.loads((out / "checkpoint" / "state.json").read_text())["global_step"] == 3
    assert not (out / "checkpoint.tmp").exists() and not (out / "checkpoint.old").exists()


def test_15_12_a_partial_checkpoint_tmp_is_removed_on_the_next_start(data, tmp_path):
    out = _checkpointed_run(data, tmp_path)
    (out / "checkpoint.tmp").mkdir()
    arrays = (out / "checkpoint" / "arrays.npz").read_bytes()
    (out / "checkpoint.tmp" / "arrays.npz").write_bytes(arrays[: len(arrays) // 2])   # the disk filled up
    assert not is_complete(out / "checkpoint.tmp") and is_complete(out / "checkpoint")
    result = invoke(train.main, ["--resume", "--out", out, "--max-steps", "3"])
    assert result.exit_code == 0, result.output
    assert "removed a partial checkpoint.tmp" in result.output and not (out / "checkpoint.tmp").exists()


def test_15_12_recovery_table(data, tmp_path):
    """Each state a cut-off swap can leave -> what recover_checkpoint makes of it."""
    src = _checkpointed_run(data, tmp_path) / "checkpoint"
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


def test_15_13_resume_of_a_finished_run_is_a_one_line_error(data, tmp_path):
    out = tmp_path / "r"
    trained(data, out)
    result = invoke(train.main, ["--resume", "--out", out])
    assert result.exit_code == 1 and "already finished" in result.output


# ---------------------------------------------------------------------------------------------------
# issue 19


def test_19_3_a_run_that_cannot_fit_is_refused_with_the_numbers(data, tmp_path, monkeypatch):
    monkeypatch.setattr("engine.run.footprint.available_host_bytes", lambda: 1 << 10)
    out = tmp_path / "r"
    result = invoke(train.main, [*base(data), "--out", out])
    assert result.exit_code == 1 and "not enough memory" in result.output
    assert "GiB" in result.output and "MemAvailable" in result.output
    assert not (out / "config.json").exists()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_19_3_the_estimate_counts_every_parameter(name):
    schema = Schema(vocab_sizes=(7, 30, 4), num_dense=5)
    model = build_model(name, schema, ModelConfig(embed_dim=3, dnn_hidden=(6, 4)))
    params = model.init_params(0)
    assert model.param_shapes() == {k: v.shape for k, v in params.items()}
    parts = estimate(model, batch_rows=100, train_rows_in_memory=1000, test_rows=10)
    assert parts["params"] == sum(v.nbytes for v in params.values()) and parts["adam"] == 2 * parts["params"]
    assert parts["batch"] > 100 * 4 * (3 + 5 + 1) and parts["data"] == 1010 * 4 * (3 + 5 + 2)


def test_19_5_evaluate_refuses_data_that_does_not_match_the_run(data, tmp_path):
    from dataio.synthetic import generate

    out = _checkpointed_run(data, tmp_path)
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


def test_19_6_empty_train_split_and_a_batch_larger_than_it_are_refused(data, tmp_path):
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


def test_19_7_resume_at_or_past_max_steps_takes_no_step(data, tmp_path):
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


def test_19_8_a_zero_clip_threshold_is_warned_about(data, tmp_path):
    args = [*base(data), "--model", "fm", "--clip-form", "paper", "--bound", "0", "--clip", "1", "--init_stddev", "0",
            "--max-steps", "1", "--out", tmp_path / "r"]
    result = invoke(train.main, args)
    assert result.exit_code == 0, result.output
    assert "CowClip threshold zero" in result.output
    assert zero_clip_warning(1.0, 1e-5, 0.0, True) is None and zero_clip_warning(0.0, 0.0, 0.0, True) is None


def test_19_10_undefined_auc_is_null_with_a_reason_in_valid_json(data, tmp_path, monkeypatch):
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


def test_19_11_a_second_trainer_on_the_same_out_is_refused(data, tmp_path):
    out = tmp_path / "r"
    with locked(out):          # the first engine.train, still running
        result = invoke(train.main, [*base(data), "--out", out])
        assert result.exit_code == 1 and "another engine.train is running" in result.output
    assert not (out / "config.json").exists()
    trained(data, out, "--max-steps", "1")     # released on exit: the next one may start


def test_19_11_load_checkpoint_checks_names_and_shapes(data, tmp_path):
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


def test_19_12_a_checkpoint_that_is_a_symlink_is_refused_up_front(data, tmp_path):
    out = _checkpointed_run(data, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (out / "checkpoint").rename(elsewhere)
    (out / "checkpoint").symlink_to(elsewhere)
    kept = {p.name: p.read_bytes() for p in elsewhere.iterdir()}
    result = invoke(train.main, ["--resume", "--out", out, "--max-steps", "4"])
    assert result.exit_code == 1 and "symbolic link" in result.output
    assert (out / "checkpoint").is_symlink() and {p.name: p.read_bytes() for p in elsewhere.iterdir()} == kept


def test_19_3_on_a_gpu_the_device_part_is_held_against_its_free_memory(monkeypatch):
    """No GPU in CI: a stand-in for CuPy's memGetInfo and memory pool carries the numbers."""
    from types import SimpleNamespace

    from engine.run.footprint import MemoryShortError, check_fits

    fake_cupy = SimpleNamespace(cuda=SimpleNamespace(runtime=SimpleNamespace(memGetInfo=lambda: (3 << 30, 8 << 30))),
                                get_default_memory_pool=lambda: SimpleNamespace(free_bytes=lambda: 1 << 30))
    monkeypatch.setattr("engine.run.footprint.available_host_bytes", lambda: 100 << 30)
    gib = 1 << 30
    check_fits({"params": gib, "adam": 2 * gib, "batch": gib // 2, "data": 50 * gib}, fake_cupy)  # 3.5 <= 4 GiB
    with pytest.raises(MemoryShortError, match=r"needs at least 5.00 GiB .* 4.00 GiB is free on the GPU"):
        check_fits({"params": gib, "adam": 2 * gib, "batch": 2 * gib, "data": gib}, fake_cupy)
    with pytest.raises(MemoryShortError, match=r"data 120.00 GiB\), 100.00 GiB is available"):
        check_fits({"params": 1, "adam": 2, "batch": 1, "data": 120 * gib}, fake_cupy)


@pytest.mark.parametrize("labels,reason", [([], "no rows"), ([0, 0, 0], "all 3 labels are 0"),
                                           ([1], "all 1 labels are 1"), ([1, 1], "all 2 labels are 1")])
def test_19_10_why_auc_is_undefined(labels, reason):
    from engine.evaluate import json_safe, scores

    label = np.asarray(labels, dtype=np.float32)
    result = scores(label, np.full(label.shape, 0.4))
    assert result["auc"] is None and reason in result["auc_undefined"]
    strict_json(json.dumps(json_safe(result), allow_nan=False))
    assert scores(np.asarray([0, 1], np.float32), np.asarray([0.2, 0.7]))["auc"] == 1.0
