"""The main job: train a CTR model with CowClip on a dataset directory, and evaluate it.

    python -m engine.train --model deepfm --bs 131072

This is the loop, the one place that joins the models, the data and the engine, read top to bottom:

    prepare        backend, data, model, parameters and Adam state (fresh or from the checkpoint)
    for each epoch, for each batch, its phases in order (engine/run/phases.py):
        take_step      loss and gradients, then engine.step.apply_gradients (Algorithm 1)
        log; evaluate at the cadence, the epoch's end and the last step; checkpoint (covers both)
    final_metrics.json (with --early-stop, the best checkpoint's test metrics)

One process and a rank of an MPI run are the same to it: `job.process` (engine/run/process.py's
SingleProcess, or engine.dist's Distributed) answers for what differs. The command line is
engine/run/cli.py, the settings engine/run/config.py, what is printed and logged engine/run/report.py.
"""
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.backend import resolve_device
from engine.cowclip import COWCLIP, ClipRule
from engine.optim import AdamState
from engine.run.checkpoint import save_checkpoint
from engine.run.config import OPTIMIZERS, RunConfig
from engine.run.directory import check_fingerprint, data_fingerprint, refuse_links
from engine.run.early_stop import EarlyStopping, settle_best
from engine.run.evaluations import best_test_metrics, evaluate_now
from engine.run.files import write_replace
from engine.run.guards import diverged, divergence
from engine.run.phases import kill_point, run_state, starts_over
from engine.run.process import SingleProcess
from engine.run.progress import compile_notice
from engine.run.report import RUNNING, log_step, metrics_lines, parameter_norms, profile_steps, show_progress
from engine.run.setup import check_set_up, resume_from_checkpoint, split_on_device, step_config_of, write_config
from engine.run.tensorboard import open_tensorboard
from engine.evaluate import json_safe
from engine.step import StepConfig, apply_gradients
from models import ModelConfig, build_model, describe_model
from dataio.schema import Schema


@dataclass
class Job:
    """Everything one run works on, and its counters."""
    cfg: RunConfig
    out: Path
    process: object                 # SingleProcess, or engine.dist's Distributed for this rank
    model: object
    kernels: object
    reader: object                  # dataio.reader.BatchReader over the train split
    step_config: StepConfig
    params: dict
    state: AdamState
    rng: np.random.Generator        # dropout's generator; saved with every checkpoint
    test: dict                      # sparse, dense, label of the test split, on the device
    bayes: dict                     # the synthetic data's Bayes-optimal metrics, or {}
    checkpoint_step: int | None = None  # global step of the checkpoint on disk, None before the first
    valid: dict | None = None       # the valid split, on the device, when --early-stop is on
    early: EarlyStopping | None = None
    stopped: bool = False           # early stopping said stop
    last_eval: dict | None = None   # the last evaluation's record (a checkpoint keeps it for final_metrics.json)
    running: list = field(default_factory=list)   # the epoch's last RUNNING losses (a checkpoint keeps them)
    profiler: object = None         # --profile's cProfile.Profile while it runs
    steps_run: int = 0              # steps taken in this process
    samples: int = 0                # samples trained on in this process (all ranks' rows under MPI)
    train_seconds: float = 0.0      # time inside take_step in this process
    started: float = field(default_factory=time.perf_counter)
    tensorboard: object = None      # --tensorboard's engine.run.tensorboard.TensorBoardWriter (rank 0)

    @property
    def global_step(self) -> int:
        """Steps taken by the run, resumed ones included: Adam's update count, state.updates."""
        return self.state.updates

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"

    @property
    def samples_per_s(self) -> float:
        return self.samples / max(self.train_seconds, 1e-9)


def run(cfg: RunConfig, out: Path, resume: bool, clip_rule: ClipRule = COWCLIP, process=None,
        tensorboard: str | None = None) -> dict:
    """Train and evaluate as cfg says, in run directory `out`. clip_rule: CowClip, or one of the
    scaling study's ablations (engine/cowclip.py). process: this process of the run (default: a
    SingleProcess). tensorboard: a directory for TensorBoard event files of every record, or None."""
    job, position = prepare(cfg, out, resume, clip_rule, process or SingleProcess())
    job.tensorboard = open_tensorboard(tensorboard, job.global_step if resume else None, job.process.is_root)
    epoch = position["epoch"]
    if reached_max_steps(cfg, job.global_step):
        print(f"global step {job.global_step} is at or past --max-steps {cfg.max_steps}: no step taken")
    for epoch in range(position["epoch"], cfg.epochs):
        if job.stopped or reached_max_steps(cfg, job.global_step):   # resumed with no step left to take
            break
        train_epoch(job, epoch, position["step_in_epoch"] if epoch == position["epoch"] else 0)
        if job.stopped or reached_max_steps(cfg, job.global_step):
            break
    if job.last_eval is None or job.last_eval["step"] != job.global_step:   # no step taken since
        job.last_eval = evaluate_now(job, max(min(epoch, cfg.epochs - 1), 0))
    final = {**job.last_eval, "steps": job.global_step, "wall_seconds": time.perf_counter() - job.started}
    if job.early is not None:
        final = {**best_test_metrics(job), "last": job.last_eval, "steps": job.global_step,
                 "stopped_early": job.stopped, "wall_seconds": final["wall_seconds"]}
        kill_point("score", job.global_step)
    final.update(job.process.summary(job.params, job.state))
    if job.process.is_root:
        kill_point("final", job.global_step)
        write_replace(out / "final_metrics.json", json.dumps(json_safe(final), indent=2, allow_nan=False))
    if job.tensorboard is not None:
        job.tensorboard.close()
    return final


def prepare(cfg: RunConfig, out: Path, resume: bool, clip_rule: ClipRule, process) -> tuple[Job, dict]:
    """Backend, data, model and the parameters to start from. -> (job, position in the data)."""
    from dataio.device_reader import train_reader
    from dataio.meta import load_meta

    kernels, device_line = resolve_device(cfg.device)
    print(device_line)
    meta, fingerprint = load_meta(cfg.data), data_fingerprint(cfg.data)
    if resume:
        check_fingerprint(out, cfg.data, fingerprint)
    schema = Schema.from_meta(meta)
    model = build_model(cfg.model, schema, ModelConfig(embed_dim=cfg.embed_dim, dropout=cfg.dropout,
                                                       init_stddev=cfg.init_stddev, loss_form=cfg.loss_form))
    if cfg.opt not in OPTIMIZERS:   # a saved config.json (--resume) can carry anything
        raise ValueError(f"--opt {cfg.opt}: not implemented; the engine has {', '.join(OPTIMIZERS)}")
    process.attach(model, kernels)   # under MPI: one GPU per rank, host staging, the table shards' routing
    xp = kernels.xp
    reader = train_reader(cfg.data, cfg.bs, cfg.seed, xp)     # on a GPU the split stays there if it fits
    check_set_up(cfg, model, reader, meta, xp)
    step_config = step_config_of(cfg, reader.num_rows, clip_rule, out if resume else None)
    reader = process.wrap_reader(reader)   # under MPI, this rank's rows of each global batch
    if process.is_root:
        refuse_links(out)
        write_config(out, cfg, step_config, schema, device_line, fingerprint)
    rng = np.random.default_rng(cfg.seed)
    resume = resume and not starts_over(out, process.is_root)   # killed before its first checkpoint
    if resume:
        params, state, position = resume_from_checkpoint(out, model, xp, process.is_root)
        rng.bit_generator.state = position["rng"]
    else:
        params = {k: xp.asarray(v) for k, v in model.init_params(cfg.seed).items()}
        state = AdamState.zeros_like(params, xp)
        position = {"epoch": 0, "step_in_epoch": 0, "global_step": 0}
        if process.is_root:
            write_replace(out / "metrics.jsonl", "")
    params, state = process.place(params, state)   # --shard-tables: this rank's rows of the tables
    job = Job(cfg, out, process, model, kernels, reader, step_config, params, state, rng,
              split_on_device(cfg.data, "test", xp), meta.get("bayes", {}),
              checkpoint_step=position["global_step"] if resume else None)
    print(describe_model(cfg.model, params))
    recorded = position.get("run") or {}   # what the run had recorded at its checkpoint (engine/run/phases.py)
    job.last_eval, job.running = recorded.get("last_eval"), recorded.get("running", [])
    if cfg.early_stop:
        job.valid = split_on_device(cfg.data, "valid", xp)
        job.early = (EarlyStopping.load_or_new(out, cfg.early_stop, recorded.get("early_stop")) if resume
                     else EarlyStopping(cfg.early_stop))
        job.stopped = job.early.should_stop
        if resume and process.is_root:
            settle_best(out, job.early.best_step)   # best/ as the checkpoint knows it
    notice = compile_notice(kernels.name)
    if notice:
        print(notice, flush=True)
    return job, position


def train_epoch(job: Job, epoch: int, start_step: int) -> None:
    """The batches of one epoch from `start_step` on, each step's phases in order: step, log, evaluation
    (at its cadence, the epoch's end and the run's last step), checkpoint (engine/run/phases.py)."""
    cfg, steps_per_epoch = job.cfg, job.reader.steps_per_epoch
    tick = time.perf_counter()
    if start_step == 0:
        job.running = []
    for step_in_epoch, batch in enumerate(job.reader.iter_epoch(epoch, start_step), start=start_step + 1):
        loss, info = take_step(job, batch, epoch, step_in_epoch)
        kill_point("step", job.global_step)
        profile_steps(job)
        job.running = running = [*job.running[1 - RUNNING:], loss]
        epoch_end = step_in_epoch == steps_per_epoch
        if job.global_step % cfg.log_every == 0 or epoch_end:
            log_step(job, epoch, loss, running, info)
            kill_point("log", job.global_step)
        if time.perf_counter() - tick > (1.0 if sys.stderr.isatty() else 15.0) or epoch_end:
            show_progress(job, epoch, step_in_epoch, float(np.mean(running[-50:])))
            tick = time.perf_counter()
        last_step = reached_max_steps(cfg, job.global_step)
        if (cfg.eval_every and job.global_step % cfg.eval_every == 0) or epoch_end or last_step:
            job.last_eval = evaluate_now(job, epoch)
        if (cfg.checkpoint_every and job.global_step % cfg.checkpoint_every == 0) or epoch_end or last_step \
                or job.stopped:   # after the step's log and evaluation, so that the checkpoint covers them
            save(job, epoch, step_in_epoch)
        if job.stopped or last_step:
            break


def take_step(job: Job, batch, epoch: int, step_in_epoch: int) -> tuple[float, dict]:
    """Loss and gradients of one batch, then Algorithm 1's update (engine/step.py). -> (loss, step info)."""
    t0 = time.perf_counter()
    params, state = job.params, job.state
    loss, grads = job.process.loss_and_grads(job.model, params, batch, job.kernels, job.rng, job.cfg.accum)
    info = apply_gradients(job.model, params, grads, state, job.step_config, job.kernels, audit=job.cfg.audit)
    loss, problem = divergence(loss, params, state, job.kernels)   # the step's one read-back, after the update
    if problem:   # the update is made and counted: this is step job.global_step; nothing of it is saved
        raise diverged(problem, job.global_step, epoch, step_in_epoch, loss, job.checkpoint_step, job.out)
    job.process.after_step(params, state, job.global_step)   # under MPI, replicas compared every K steps
    job.steps_run += 1
    job.train_seconds += time.perf_counter() - t0
    job.samples += job.process.rows_in_last_batch
    if job.cfg.log and job.global_step % job.cfg.log_every == 0:
        info.update(parameter_norms(params, grads, state))
    return loss, info


def reached_max_steps(cfg: RunConfig, global_step: int) -> bool:
    return bool(cfg.max_steps) and global_step >= cfg.max_steps


def save(job: Job, epoch: int, step_in_epoch: int) -> None:
    """Checkpoint the parameters, Adam state, data position and RNG (an epoch's end as the next's start)."""
    if step_in_epoch == job.reader.steps_per_epoch:
        epoch, step_in_epoch = epoch + 1, 0
    position = {"epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": job.global_step}
    params, state = job.process.full_state(job.params, job.state)   # under MPI, whole tables on rank 0
    if job.process.is_root:
        recorded = run_state(metrics_lines(job.metrics_path), job.early, job.last_eval, job.running)
        save_checkpoint(job.out, params, state, position, job.rng.bit_generator.state, job.kernels.to_host,
                        run_state=recorded)
        kill_point("checkpoint", job.global_step)
        if job.early is not None:
            settle_best(job.out, job.early.best_step)   # a best that waited in best/pending is covered now
    job.checkpoint_step = job.global_step


from engine.run.cli import main  # noqa: E402  (the command line; `python -m engine.train` runs it)

if __name__ == "__main__":
    from engine.run.runtime import configure_process

    configure_process()   # keep freed memory, quiet Numba threads (engine/run/runtime.py)
    main()
