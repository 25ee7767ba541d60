"""What a run shows and writes as it goes: metrics.jsonl lines, the progress line, the evaluation
lines, the reference's --log norms and --profile. The loop (engine/train.py) calls these; none of
them changes the training."""
import cProfile
import io
import json
import pstats
import sys
import time
from pathlib import Path

import numpy as np

from engine.evaluate import json_safe
from engine.optim import AdamState
from engine.run.files import append_line, fsync_file, write_replace
from engine.run.progress import eta_seconds, format_duration

PROFILE_STEPS = (80, 100)   # --profile: the reference's TensorBoard profile_batch '80,100'
RUNNING = 50                # the running loss is the mean of the epoch's last RUNNING losses


def append_record(path: Path, record: dict) -> None:
    """One metrics.jsonl line (appended to this run's own file, never through a link: engine/run/files.py)."""
    append_line(path, json.dumps(json_safe(record), allow_nan=False))


def metrics_lines(path: Path) -> int:
    """The lines of metrics.jsonl, flushed to disk first: what a checkpoint counts (engine/run/phases.py)."""
    fsync_file(path)
    return path.read_bytes().count(b"\n")


def write_record(job, record: dict) -> None:
    """One record of the run: a metrics.jsonl line, and TensorBoard events under --tensorboard."""
    append_record(job.metrics_path, record)
    if job.tensorboard is not None:
        job.tensorboard.write(json_safe(record))


def log_step(job, epoch: int, loss: float, running: list, info: dict) -> None:
    if not job.process.is_root:
        return
    record = {"type": "step", "epoch": epoch + 1, "step": job.global_step, "loss": loss,
              "running_loss": float(np.mean(running[-RUNNING:])), "lr": info["lr"],
              "lr_embed": job.step_config.lr_embed, "samples_per_s": job.samples_per_s,
              "elapsed": time.perf_counter() - job.started}
    record.update({k: v for k, v in info.items() if k.startswith(("audit.", "norm."))})
    write_record(job, record)


def total_steps(job) -> int:
    """Steps the whole run will take (all epochs, or --max-steps if sooner)."""
    steps = job.cfg.epochs * job.reader.steps_per_epoch
    return min(steps, job.cfg.max_steps) if job.cfg.max_steps else steps


def show_progress(job, epoch: int, step: int, loss: float) -> None:
    if not job.process.is_root:
        return
    steps, bar_width = job.reader.steps_per_epoch, 20
    done = int(bar_width * step / max(steps, 1))
    eta = eta_seconds(job.steps_run, total_steps(job) - (job.global_step - job.steps_run), job.train_seconds)
    line = (f"epoch {epoch + 1}/{job.cfg.epochs} [{'#' * done}{'.' * (bar_width - done)}] {step}/{steps} "
            f"loss {loss:.5f}  {job.samples_per_s:,.0f} samples/s  {time.perf_counter() - job.started:.0f}s"
            + (f"  ETA {format_duration(eta)}" if eta is not None else ""))
    if sys.stderr.isatty():  # redraw one line on a terminal; whole lines in a log
        print("\r" + line, end="\n" if step == steps else "", file=sys.stderr, flush=True)
    else:
        print(line, file=sys.stderr, flush=True)


def auc_text(result: dict) -> str:
    return f"{result['auc']:.5f}" if result["auc"] is not None else f"undefined ({result['auc_undefined']})"


def number_text(value) -> str:
    return "undefined" if value is None else f"{value:.5f}"


def metrics_text(result: dict) -> str:
    """test AUC, logloss, NE and calibration of an evaluation, as printed."""
    return (f"test AUC {auc_text(result)}, logloss {number_text(result['logloss'])}, "
            f"NE {number_text(result['ne'])}, calibration {number_text(result['calibration'])}")


def parameter_norms(params: dict, grads: dict, state: AdamState) -> dict:
    """--log (the reference's): per parameter, the L2 norm of the weights, of the gradient and of the
    Adam moments m and v. A table's gradient is its batch rows as Adam got them (L2 and CowClip in); a
    weight's is the backward pass's (its L2 term is added inside the update)."""
    norms = {}
    for name, w in params.items():
        g = grads[name].rows if hasattr(grads[name], "rows") else grads[name]
        for what, array in (("weight", w), ("grad", g), ("m", state.m[name]), ("v", state.v[name])):
            norms[f"norm.{what}.{name}"] = float((array.astype("float64") ** 2).sum() ** 0.5)
    return norms


def profile_steps(job) -> None:
    """--profile: cProfile over steps 80-100 (as the reference profiles batches 80-100), written as
    the 40 costliest functions by cumulative time into RUN/profile.txt."""
    if not job.cfg.profile:
        return
    first, last = PROFILE_STEPS
    if job.global_step == first - 1 and job.profiler is None:
        job.profiler = cProfile.Profile()
        job.profiler.enable()
    elif job.global_step == last and job.profiler is not None:
        job.profiler.disable()
        text = io.StringIO()
        pstats.Stats(job.profiler, stream=text).sort_stats("cumulative").print_stats(40)
        if job.process.is_root:
            write_replace(job.out / "profile.txt", f"steps {first}-{last}\n" + text.getvalue())
            print(f"[profile] steps {first}-{last}: {job.out / 'profile.txt'}", flush=True)
        job.profiler = None
