"""The phases of a training run, and what a checkpoint promises about them: a run killed at any point and
resumed records exactly what the uninterrupted run records.

Each global step runs its phases in this order (engine/train.py):
    step         loss, gradients, update
    log          a "step" line in metrics.jsonl (every --log-every steps, and at each epoch's end)
    eval         an "eval" line (every --eval-every steps, at each epoch's end, at the run's last step);
                 with --early-stop: the valid AUC, a new best into best/pending, the stop decision
    checkpoint   (every --checkpoint-every steps, at each epoch's end, at the run's last step) parameters,
                 Adam state, data position, RNG, and `run_state`: the metrics.jsonl lines written so far,
                 the early-stopping state, the last evaluation and the epoch's recent losses; then
                 best/pending becomes best/checkpoint
and after the last step:
    score        --early-stop: a "best" line with the test metrics of best/checkpoint
    final        final_metrics.json, written by replace and last

A checkpoint comes after its step's log and evaluation, so it covers everything recorded up to it. A
resumed run cuts metrics.jsonl back to the lines the checkpoint counted, takes the early-stopping state
and the last evaluation from it, and goes on: whatever came after the checkpoint is redone once, nothing
before it is lost or repeated. A run is finished when no step is left to take (its epochs, its
--max-steps, or early stopping's decision, all recorded) and final_metrics.json is there for its last
step; a run killed in `score` or `final` is not finished, and --resume does those two phases again.

Test hook: COWCLIP_KILL_AT=PHASE[@STEP] kills the process with SIGKILL at global step STEP (default: the
first time) at PHASE: the end of step, log, eval, best (a new best in best/pending), checkpoint (written,
best/ not yet settled), score (the best's line written), final (before final_metrics.json), or part way
through an evaluation, evaluating (the test metrics computed, nothing written) -- as a crash or `kill -9`.
"""
import json
import os
import signal
from pathlib import Path

from engine.run.checkpoint import recover_checkpoint
from engine.run.early_stop import EarlyStopping, settle_best
from engine.run.files import write_replace

KILL_AT = "COWCLIP_KILL_AT"
PHASES = ("step", "log", "evaluating", "eval", "best", "checkpoint", "score", "final")


def kill_point(phase: str, global_step: int) -> None:
    """The test hook: SIGKILL this process if COWCLIP_KILL_AT names this phase (and step)."""
    wanted = os.environ.get(KILL_AT)
    if not wanted:
        return
    name, _, step = wanted.partition("@")
    if name not in PHASES:
        raise ValueError(f"{KILL_AT}={wanted}: no phase {name!r}; the phases are {', '.join(PHASES)}")
    if name == phase and (not step or int(step) == global_step):
        os.kill(os.getpid(), signal.SIGKILL)


def starts_over(out: Path, writes: bool) -> bool:
    """--resume of a run killed before its first checkpoint: True, and the run directory is set back to a
    fresh start (metrics.jsonl emptied, a half-written best/ removed); the run then starts again from
    step 0, which is what it would have done. False when there is a checkpoint to resume from (a swap
    cut off is finished first). writes: this process may change the run directory (rank 0 under MPI)."""
    recovered = recover_checkpoint(out) if writes else None
    if recovered:
        print(f"{out}: {recovered}")
    if (Path(out) / "checkpoint" / "state.json").is_file():
        return False
    print(f"{out}: no checkpoint yet (stopped before its first): starting again from step 0", flush=True)
    if writes:
        write_replace(Path(out) / "metrics.jsonl", "")
        settle_best(out, -1)
    return True


def run_state(lines: int, early, last_eval: dict | None, running: list) -> dict:
    """What a checkpoint records of the run besides the model (state.json's "run"): the metrics.jsonl lines
    written, the last evaluation, the epoch's recent losses (the logged running loss is their mean) and
    the early-stopping state."""
    return {"metrics_lines": lines, "last_eval": last_eval, "running": list(running),
            "early_stop": None if early is None else early.recorded()}


def steps_left(cfg, position: dict, recorded: dict | None) -> bool:
    """Whether a run at checkpoint `position` has steps left: its epochs, --max-steps and early stopping's
    recorded decision (patience from cfg)."""
    if position.get("epoch", 0) >= cfg.epochs:
        return False
    if cfg.max_steps and position.get("global_step", 0) >= cfg.max_steps:
        return False
    early = (recorded or {}).get("early_stop")
    if cfg.early_stop and early:
        return not EarlyStopping.from_recorded(cfg.early_stop, early).should_stop
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
