"""A kill at any point changes nothing: a run killed (SIGKILL, through engine/run/phases.py's
COWCLIP_KILL_AT hook) at each phase boundary of the loop and resumed records exactly what the
uninterrupted run records: metrics.jsonl, the checkpoint, best/, early_stop.json, final_metrics.json
(times aside). And --resume finishes what a finished run had not, and nothing more.

FM on 3,000 train rows at --bs 256: 12 steps an epoch; evaluations every 5 steps and at epoch ends,
checkpoints every 3 steps. With --early-stop 2 the run evaluates at 5 10 12 15 20 24 25 30 35 36 40, its
best is at 35 and it stops at 40: every phase happens at a step the schedule below names.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
KILL_AT = "COWCLIP_KILL_AT"
TIMES = {"elapsed", "samples_per_s", "eval_seconds", "wall_seconds"}
EARLY = ["--model", "fm", "--bs", "256", "--epoch", "4", "--eval-every", "5", "--early-stop", "2",
         "--checkpoint-every", "3", "--device", "cpu", "--warmup", "0", "--lr", "0.01", "--lr_embed", "0.01",
         "--sparse_embed_dim", "4"]
EVAL_STEPS = [5, 10, 12, 15, 20, 24, 25, 30, 35, 36, 40]


def train(data, out, *more, kill: str | None = None) -> subprocess.CompletedProcess:
    """python -m engine.train as a user runs it; kill: PHASE[@STEP] to be killed at."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(KILL_AT, None)
    if kill:
        env[KILL_AT] = kill
    return subprocess.run([sys.executable, "-m", "engine.train", "--data", str(data), "--out", str(out), *more],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def timeless(value):
    """A record with its wall-clock fields dropped (they are the one thing a rerun cannot repeat)."""
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items() if k not in TIMES}
    if isinstance(value, list):
        return [timeless(v) for v in value]
    return value


def checkpoint_of(path: Path) -> dict:
    with np.load(path / "arrays.npz") as arrays:
        content = {name: arrays[name] for name in arrays.files}
    return {"arrays": content, "state": timeless(json.loads((path / "state.json").read_text()))}


def recorded(out: Path) -> dict:
    """Everything a run directory records, times aside."""
    found = {"metrics": timeless([json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]),
             "final": timeless(json.loads((out / "final_metrics.json").read_text())),
             "checkpoint": checkpoint_of(out / "checkpoint"),
             "leftovers": sorted(p.name for p in out.iterdir() if p.name.endswith((".tmp", ".old")))}
    if (out / "best").exists():
        found["best"] = checkpoint_of(out / "best" / "checkpoint")
        found["best_dir"] = sorted(p.name for p in (out / "best").iterdir())
        found["early_stop"] = json.loads((out / "early_stop.json").read_text())
    return found


def assert_same(got: dict, want: dict, where=""):
    assert got.keys() == want.keys(), where
    for key in want:
        if isinstance(want[key], dict):
            assert_same(got[key], want[key], f"{where}.{key}")
        elif isinstance(want[key], np.ndarray):
            assert np.array_equal(got[key], want[key]), f"{where}.{key} differs"
        else:
            assert got[key] == want[key], f"{where}.{key}: {got[key]!r} != {want[key]!r}"


@pytest.fixture(scope="module")
def uninterrupted(with_valid, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    result = train(with_valid, out, *EARLY)
    assert result.returncode == 0, result.stderr
    record = recorded(out)
    assert [r["step"] for r in record["metrics"] if r["type"] == "eval"] == EVAL_STEPS
    assert record["final"]["step"] == 35 and record["final"]["stopped_early"] and record["final"]["steps"] == 40
    return record


def killed_and_resumed(data, out, phase: str, *more) -> subprocess.CompletedProcess:
    killed = train(data, out, *EARLY, *more, kill=phase)
    assert killed.returncode == -9, f"not killed at {phase}: {killed.returncode}\n{killed.stderr[-2000:]}"
    return train(data, out, "--resume")


@pytest.mark.parametrize("phase", [
    "step@7",          # after an update, before anything is logged
    "log@10",          # after a step line, before the evaluation at the same step
    "evaluating@12",   # during the epoch-end evaluation, whose step is also a --checkpoint-every step
    "eval@12",         # its line written
    "eval@24",
    "best@35",         # a new best in best/pending, not yet covered by a checkpoint
    "checkpoint@36",   # the epoch-end checkpoint written, best/pending not yet made best/checkpoint
    "evaluating@40",   # during the evaluation that decides to stop
    "eval@40",
    "checkpoint@40",   # the last checkpoint
    "score",           # the best checkpoint scored, final_metrics.json not written
    "final",           # everything but final_metrics.json
])
def test_a_run_killed_at_a_phase_and_resumed_records_what_the_whole_run_records(
        with_valid, tmp_path, uninterrupted, phase):
    out = tmp_path / "run"
    resumed = killed_and_resumed(with_valid, out, phase)
    assert resumed.returncode == 0, resumed.stderr
    assert_same(recorded(out), uninterrupted)


def test_a_run_killed_twice_records_what_the_whole_run_records(with_valid, tmp_path, uninterrupted):
    out = tmp_path / "run"
    assert train(with_valid, out, *EARLY, kill="evaluating@12").returncode == -9
    assert train(with_valid, out, "--resume", kill="best@35").returncode == -9
    assert train(with_valid, out, "--resume").returncode == 0
    assert_same(recorded(out), uninterrupted)


def test_resume_of_an_early_stopped_run_is_refused_as_finished(with_valid, tmp_path):
    out = tmp_path / "run"
    assert train(with_valid, out, *EARLY).returncode == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    again = train(with_valid, out, "--resume")
    assert again.returncode != 0 and "already finished" in again.stderr and "Traceback" not in again.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"} == before


MAX_STEPS = ["--model", "fm", "--bs", "256", "--epoch", "3", "--eval-every", "4", "--device", "cpu",
             "--sparse_embed_dim", "4", "--max-steps", "9"]


@pytest.fixture(scope="module")
def stopped_by_max_steps(with_valid, tmp_path_factory):
    out = tmp_path_factory.mktemp("max") / "run"
    result = train(with_valid, out, *MAX_STEPS)
    assert result.returncode == 0, result.stderr
    record = recorded(out)
    assert record["final"]["steps"] == 9
    assert [r["step"] for r in record["metrics"] if r["type"] == "eval"] == [4, 8, 9]
    return record


@pytest.mark.parametrize("phase", ["eval@9", "checkpoint@9", "final"])
def test_a_max_steps_run_resumed_without_repeating_it_stops_where_it_would_have(
        with_valid, tmp_path, stopped_by_max_steps, phase):
    out = tmp_path / "run"
    killed = train(with_valid, out, *MAX_STEPS, kill=phase)
    assert killed.returncode == -9
    resumed = train(with_valid, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same(recorded(out), stopped_by_max_steps)


def test_resume_of_a_run_that_reached_its_max_steps_is_refused_unless_given_more(with_valid, tmp_path):
    out = tmp_path / "run"
    assert train(with_valid, out, *MAX_STEPS).returncode == 0
    again = train(with_valid, out, "--resume")
    assert again.returncode != 0 and "already finished" in again.stderr and "Traceback" not in again.stderr
    more = train(with_valid, out, "--resume", "--max-steps", "12")
    assert more.returncode == 0, more.stderr
    final = json.loads((out / "final_metrics.json").read_text())
    assert final["steps"] == 12
    assert json.loads((out / "config.json").read_text())["max_steps"] == 12
