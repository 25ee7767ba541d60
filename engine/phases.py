"""The phases of a training run, and what a checkpoint promises about them: a run killed at any point and
resumed records exactly what the uninterrupted run records.

Each global step runs its phases in this order (engine/train.py):
    step         loss, gradients, update
    log          a "step" line in metrics.jsonl (every --log-every steps, and at each epoch's end)
    eval         an "eval" line (every --eval-every steps, at each epoch's end, at the run's last step);
                 with --early-stop: the valid AUC, a new best into best/pending, the stop decision
    checkpoint   (every --checkpoint-every steps, at each epoch's end, at the run's last step) parameters,
                 Adam state, data position, RNG, and `run_state`: the metrics.jsonl lines written so far,
                 the early-stopping state and the last evaluation; then best/pending becomes best/checkpoint
and after the last step:
    score        --early-stop: a "best" line with the test metrics of best/checkpoint
    final        final_metrics.json, written by replace and last

A checkpoint comes after its step's log and evaluation, so it covers everything recorded up to it. A
resumed run cuts metrics.jsonl back to the lines the checkpoint counted, takes the early-stopping state
and the last evaluation from it, and goes on: whatever came after the checkpoint is redone once, nothing
before it is lost or repeated. A run is finished when no step is left to take (its epochs, its
--max-steps, or early stopping's decision, all recorded) and final_metrics.json is there for its last
step; a run killed in `score` or `final` is not finished, and --resume does those two phases again.

Test hook: COWCLIP_KILL_AT=PHASE[@STEP] kills the process with SIGKILL at PHASE (step, log, eval, best,
checkpoint, score, final) at global step STEP (default: the first time), as a crash or `kill -9` would.
"""
import json
import os
import signal
from pathlib import Path

KILL_AT = "COWCLIP_KILL_AT"
PHASES = ("step", "log", "eval", "best", "checkpoint", "score", "final")


def kill_point(phase: str, global_step: int) -> None:
    """The test hook: SIGKILL this process if COWCLIP_KILL_AT names this phase (and step)."""
    wanted = os.environ.get(KILL_AT)
    if not wanted:
        return
    name, _, step = wanted.partition("@")
    if name == phase and (not step or int(step) == global_step):
        os.kill(os.getpid(), signal.SIGKILL)


def run_state(lines: int, early, last_eval: dict | None) -> dict:
    """What a checkpoint records of the run besides the model (state.json's "run")."""
    return {"metrics_lines": lines, "last_eval": last_eval,
            "early_stop": None if early is None else {"best_valid_auc": early.best_valid_auc,
                                                      "best_step": early.best_step,
                                                      "since_best": early.since_best}}


def steps_left(cfg, position: dict, recorded: dict | None) -> bool:
    """Whether a run at checkpoint `position` has steps left: its epochs, --max-steps and early stopping's
    recorded decision (patience from cfg)."""
    if position.get("epoch", 0) >= cfg.epochs:
        return False
    if cfg.max_steps and position.get("global_step", 0) >= cfg.max_steps:
        return False
    early = (recorded or {}).get("early_stop")
    if cfg.early_stop and early and early.get("since_best", 0) >= cfg.early_stop:
        return False
    return True


def finished(out: Path, cfg, position: dict) -> bool:
    """Whether the run in `out` has nothing left to do: no step left and final_metrics.json written for the
    checkpoint's step (a run killed while scoring its best checkpoint or writing final_metrics.json is
    not finished: --resume redoes those phases)."""
    if steps_left(cfg, position, position.get("run")):
        return False
    try:
        final = json.loads((Path(out) / "final_metrics.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(final, dict) and final.get("steps") == position.get("global_step")
