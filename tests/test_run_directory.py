"""A run directory is never replaced, shared or overwritten by accident: the claim, the lock,
the links refused, the log cut back to the checkpoint, the data fingerprint (engine/run/directory.py)."""
import json
import shutil
from run_cases import checkpointed_run, base, data, invoke, steps_logged, trained  # noqa: F401 (tests/; data is a fixture)


from engine import train
from engine.run.directory import locked, truncate_metrics


def test_an_existing_run_is_refused_without_overwrite(data, tmp_path):
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


def test_resume_refuses_a_dataset_rebuilt_since(data, tmp_path):
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


def test_resume_cuts_the_log_back_to_the_checkpoint(data, tmp_path, monkeypatch):
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


def test_truncate_keeps_records_up_to_the_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"type": t, "step": s}) + "\n" for t, s in
                            [("step", 1), ("step", 2), ("eval", 2), ("step", 3), ("eval", 3)]) + '{"ty')
    assert truncate_metrics(path, 2) == 3
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 2]


def test_a_second_trainer_on_the_same_out_is_refused(data, tmp_path):
    out = tmp_path / "r"
    with locked(out):          # the first engine.train, still running
        result = invoke(train.main, [*base(data), "--out", out])
        assert result.exit_code == 1 and "another engine.train is running" in result.output
    assert not (out / "config.json").exists()
    trained(data, out, "--max-steps", "1")     # released on exit: the next one may start


def test_a_checkpoint_that_is_a_symlink_is_refused_up_front(data, tmp_path):
    out = checkpointed_run(data, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (out / "checkpoint").rename(elsewhere)
    (out / "checkpoint").symlink_to(elsewhere)
    kept = {p.name: p.read_bytes() for p in elsewhere.iterdir()}
    result = invoke(train.main, ["--resume", "--out", out, "--max-steps", "4"])
    assert result.exit_code == 1 and "symbolic link" in result.output
    assert (out / "checkpoint").is_symlink() and {p.name: p.read_bytes() for p in elsewhere.iterdir()} == kept
