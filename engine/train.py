"""The main job: train a CTR model with CowClip on a dataset directory, and evaluate it.

    python -m engine.train --model deepfm --bs 131072

With no --data it trains on the built-in synthetic, Criteo-shaped data set (generated once into
~/.cache/cowclip-engine, or $COWCLIP_CACHE, and reused). This is the one module that joins the
models, the data and the engine: `run` is the loop, read top to bottom

    prepare    backend, data, model, parameters and Adam state (fresh or from the checkpoint)
    for each epoch, for each batch:
        take_step      loss and gradients, then engine.step.apply_gradients (Algorithm 1)
        log / evaluate / checkpoint at their cadences
    evaluate at each epoch's end, checkpoint, and write final_metrics.json

Hyperparameters: --scale-rule auto (the default) trains the reference train.py's defaults when --bs
equals --base-bs (1024; its baseline command) and otherwise computes lr, lr_embed, l2, clip, bound,
warmup and init_stddev for --bs with the CowClip rule from the dataset's base (engine/scaling.py,
resolved in engine/run_config.py); any of them given on the command line wins. The reference
train.py's flags are accepted as it spells them (--lr_embed, --init_stddev, ...) and with dashes.
"""
import cProfile
import io
import contextlib
import json
import math
import pstats
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click
import numpy as np
from click.core import ParameterSource

from engine.accumulate import accumulated_loss_and_grads
from engine.backend import resolve_device
from engine.checkpoint import load_checkpoint, recover_checkpoint, save_checkpoint
from engine.cowclip import COWCLIP, ClipRule
from engine.early_stop import PENDING, EarlyStopping, best_dir, settle_best
from engine.errors import TrainingError
from engine.evaluate import evaluate, json_safe
from engine.footprint import check_fits, estimate, param_shapes
from engine.guards import check_train_rows, loss_problem, non_finite_state, zero_clip_warning
from engine.optim import AdamState
from engine.phases import finished, kill_point, run_state, starts_over
from engine.options import COUNT, NON_NEGATIVE, POSITIVE_INT, PROBABILITY_BELOW_ONE, SEED
from engine.progress import compile_notice, eta_seconds, format_duration
from engine.run_config import (LOG_EVERY, OPTIMIZERS, REFERENCE_EPOCHS, SYNTHETIC_EPOCHS, RunConfig,
                               options_from_config, resolve)
from engine.run_dir import (check_fingerprint, claim_run_dir, clear_run_files, data_fingerprint, locked,
                            refuse_links, truncate_metrics)
from engine.run_files import append_line, fsync_file, write_replace
from engine.scaling import CLI_RULES
from engine.step import StepConfig, apply_gradients
from models import ModelConfig, Schema, build_model, describe_model

PROFILE_STEPS = (80, 100)   # --profile: the reference's TensorBoard profile_batch '80,100'
RUNNING = 50                # the running loss is the mean of the epoch's last RUNNING losses


@dataclass
class Job:
    """Everything one run works on, and its counters."""
    cfg: RunConfig
    out: Path
    model: object
    kernels: object
    reader: object                  # dataio.reader.BatchReader over the train split
    step_config: StepConfig
    params: dict
    state: AdamState
    rng: np.random.Generator        # dropout's generator; saved with every checkpoint
    test: dict                      # sparse, dense, label of the test split, on the device
    bayes: dict                     # the synthetic data's Bayes-optimal metrics, or {}
    global_step: int = 0
    checkpoint_step: int | None = None  # global step of the checkpoint on disk, None before the first
    valid: dict | None = None       # the valid split, on the device, when --early-stop is on
    early: EarlyStopping | None = None
    stopped: bool = False           # early stopping said stop
    last_eval: dict | None = None   # the last evaluation's record (a checkpoint keeps it for final_metrics.json)
    running: list = field(default_factory=list)   # this epoch's last RUNNING losses (a checkpoint keeps them)
    profiler: cProfile.Profile | None = None
    steps_run: int = 0              # steps taken in this process
    samples: int = 0                # samples trained on in this process
    train_seconds: float = 0.0      # time inside take_step in this process
    started: float = field(default_factory=time.perf_counter)
    dist: object = None             # engine.dist.session.Distributed under --dist mpi, else None

    @property
    def writes(self) -> bool:
        """Only one process (rank 0 of an MPI run) writes files and prints progress."""
        return self.dist is None or self.dist.is_root

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"

    @property
    def samples_per_s(self) -> float:
        return self.samples / max(self.train_seconds, 1e-9)


def run(cfg: RunConfig, out: Path, resume: bool, clip_rule: ClipRule = COWCLIP, dist=None) -> dict:
    """Train and evaluate as cfg says, in run directory `out`. clip_rule: CowClip, or one of the
    scaling study's ablations (engine/cowclip.py). dist: engine.dist's Distributed for this rank of
    an MPI run, or None."""
    job, position = prepare(cfg, out, resume, clip_rule, dist)
    epoch = position["epoch"]
    if _reached_max_steps(cfg, job.global_step):
        print(f"global step {job.global_step} is at or past --max-steps {cfg.max_steps}: no step taken")
    for epoch in range(position["epoch"], cfg.epochs):
        if job.stopped or _reached_max_steps(cfg, job.global_step):   # resumed with no step left
            break
        start_step = position["step_in_epoch"] if epoch == position["epoch"] else 0
        train_epoch(job, epoch, start_step)
        if job.stopped or _reached_max_steps(cfg, job.global_step):
            break
    if job.last_eval is None or job.last_eval["step"] != job.global_step:   # no step taken since
        job.last_eval = evaluate_now(job, max(min(epoch, cfg.epochs - 1), 0))
    last_eval = job.last_eval
    final = {**last_eval, "steps": job.global_step, "wall_seconds": time.perf_counter() - job.started}
    if job.early is not None:
        final = {**best_test_metrics(job), "last": last_eval, "steps": job.global_step,
                 "stopped_early": job.stopped, "wall_seconds": final["wall_seconds"]}
        kill_point("score", job.global_step)
    if dist:
        final.update(dist.summary(job.params, job.state))
    if job.writes:
        kill_point("final", job.global_step)
        write_replace(out / "final_metrics.json", json.dumps(json_safe(final), indent=2, allow_nan=False))
    return final


def prepare(cfg: RunConfig, out: Path, resume: bool, clip_rule: ClipRule = COWCLIP,
            dist=None) -> tuple[Job, dict]:
    """Backend, data, model and the parameters to start from. -> (job, position in the data)."""
    from dataio.meta import load_meta
    from dataio.reader import read_split

    kernels, device_line = resolve_device(cfg.device)
    print(device_line)
    meta = load_meta(cfg.data)
    fingerprint = data_fingerprint(cfg.data)
    if resume:
        check_fingerprint(out, cfg.data, fingerprint)
    schema = Schema.from_meta(meta)
    model = build_model(cfg.model, schema, ModelConfig(embed_dim=cfg.embed_dim, dropout=cfg.dropout,
                                                       init_stddev=cfg.init_stddev))
    if cfg.opt not in OPTIMIZERS:   # a saved config.json (--resume) can carry anything
        raise ValueError(f"--opt {cfg.opt}: not implemented; the engine has {', '.join(OPTIMIZERS)}")
    if dist:
        dist.attach(model, kernels)   # one GPU per rank, host staging, the table shards' routing
    xp = kernels.xp
    from dataio.device_reader import train_reader
    reader = train_reader(cfg.data, cfg.bs, cfg.seed, xp)     # on a GPU the split stays there if it fits
    check_set_up(cfg, model, reader, meta, xp)
    if dist:
        reader = dist.wrap_reader(reader)   # this rank's rows of each global batch
    step_config = StepConfig(lr=cfg.hp["lr"], lr_embed=cfg.hp["lr_embed"], l2=cfg.hp["l2"], clip=cfg.hp["clip"],
                             bound=cfg.hp["bound"], clip_form=cfg.clip_form, embed_optim=cfg.embed_optim,
                             warmup_updates=int(cfg.hp["warmup"] * reader.steps_per_epoch), rule=clip_rule)
    writes = dist is None or dist.is_root
    if writes:
        refuse_links(out)
        out.mkdir(parents=True, exist_ok=True)
        write_replace(out / "config.json", json.dumps({**asdict(cfg), "step_config": asdict(step_config),
                                                       "schema": asdict(schema), "device_line": device_line,
                                                       "data_fingerprint": fingerprint}, indent=2, default=str))
    test = {k: xp.asarray(v) for k, v in read_split(cfg.data, "test").items() if k in ("sparse", "dense", "label")}
    rng = np.random.default_rng(cfg.seed)
    resume = resume and not starts_over(out, writes)
    if resume:
        params, state, position = resume_from_checkpoint(out, model, xp, writes)
        rng.bit_generator.state = position["rng"]
    else:
        params = {k: xp.asarray(v) for k, v in model.init_params(cfg.seed).items()}
        state = AdamState.zeros_like(params, xp)
        position = {"epoch": 0, "step_in_epoch": 0, "global_step": 0}
        if writes:
            write_replace(out / "metrics.jsonl", "")
    if dist:
        params, state = dist.place(params, state)   # --shard-tables: this rank's rows of the tables
    job = Job(cfg, out, model, kernels, reader, step_config, params, state, rng, test, meta.get("bayes", {}),
              global_step=position["global_step"], checkpoint_step=position["global_step"] if resume else None,
              dist=dist)
    print(describe_model(cfg.model, params))
    recorded = position.get("run") or {}   # what the checkpoint's run had recorded (engine/phases.py)
    job.last_eval, job.running = recorded.get("last_eval"), recorded.get("running", [])
    if cfg.early_stop:
        job.valid = {k: xp.asarray(v) for k, v in read_split(cfg.data, "valid").items()
                     if k in ("sparse", "dense", "label")}
        job.early = (EarlyStopping.load_or_new(out, cfg.early_stop, recorded.get("early_stop")) if resume
                     else EarlyStopping(cfg.early_stop))
        job.stopped = job.early.should_stop
        if resume and writes:
            settle_best(out, job.early.best_step)   # best/ as the checkpoint knows it
    notice = compile_notice(kernels.name)
    if notice:
        print(notice, flush=True)
    return job, position


def check_set_up(cfg: RunConfig, model, reader, meta: dict, xp) -> None:
    """Before anything large is allocated: a train split and batch that make sense, a CowClip threshold
    that is not zero everywhere (a warning), and enough memory (engine/guards.py, engine/footprint.py)."""
    check_train_rows(reader.num_rows, cfg.bs, cfg.data)
    warning = zero_clip_warning(cfg.hp["clip"], cfg.hp["bound"], cfg.init_stddev, model.uses_embedding)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    micro_batch = math.ceil(min(cfg.bs, reader.num_rows) / cfg.accum)
    parts = estimate(model, micro_batch, reader.num_rows if reader.in_memory else 0,
                     int(meta["splits"]["test"]["rows"]))
    check_fits(parts, xp)


def resume_from_checkpoint(out: Path, model, xp, writes: bool = True) -> tuple[dict, AdamState, dict]:
    """The checkpoint in `out` (after finishing an interrupted swap), checked against the model, and
    metrics.jsonl cut back to its step. -> (params, Adam state, position). writes: this process may
    change the run directory (under MPI, rank 0 alone; the others only read)."""
    recovered = recover_checkpoint(out) if writes else None
    if recovered:
        print(f"{out}: {recovered}")
    params, state, position = load_checkpoint(out, xp.asarray, param_shapes(model))
    lines = (position.get("run") or {}).get("metrics_lines")
    dropped = truncate_metrics(out / "metrics.jsonl", position["global_step"], lines) if writes else 0
    print(f"resumed from {out / 'checkpoint'} at epoch {position['epoch'] + 1}, step {position['step_in_epoch']} "
          f"(global step {position['global_step']})" + (f"; dropped {dropped} metrics.jsonl line(s) logged "
                                                        f"after it" if dropped else ""))
    return params, state, position


def train_epoch(job: Job, epoch: int, start_step: int) -> None:
    """The batches of one epoch from `start_step` on, each step's phases in order: step, log, evaluation
    (at its cadence, the epoch's end and the run's last step), checkpoint (engine/phases.py)."""
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
            show_progress(job, epoch, step_in_epoch, float(np.mean(running[-RUNNING:])))
            tick = time.perf_counter()
        last_step = _reached_max_steps(cfg, job.global_step)
        if (cfg.eval_every and job.global_step % cfg.eval_every == 0) or epoch_end or last_step:
            job.last_eval = evaluate_now(job, epoch)
        if (cfg.checkpoint_every and job.global_step % cfg.checkpoint_every == 0) or epoch_end or last_step \
                or job.stopped:   # after the step's log and evaluation, so the checkpoint covers them
            save(job, epoch, step_in_epoch)
        if job.stopped or last_step:
            break


def take_step(job: Job, batch, epoch: int, step_in_epoch: int) -> tuple[float, dict]:
    """Loss and gradients of one batch, then Algorithm 1's update (engine/step.py). -> (loss, step info)."""
    t0 = time.perf_counter()
    model, params, kernels = job.model, job.params, job.kernels
    if job.dist:   # this rank's rows -> the global batch's loss and gradients, the same on every rank
        loss, grads = job.dist.loss_and_grads(model, params, batch, kernels, job.rng, job.cfg.accum)
    elif job.cfg.accum > 1:
        loss, grads = accumulated_loss_and_grads(model, params, batch, job.cfg.accum, kernels, job.rng)
    else:
        loss, grads = model.loss(params, batch, kernels, training=True, rng=job.rng)
    problem = loss_problem(loss)
    if problem:
        stop_diverged(job, problem, epoch, step_in_epoch)
    info = apply_gradients(model, params, grads, job.state, job.step_config, kernels, audit=job.cfg.audit)
    bad = non_finite_state(params, job.state, kernels.xp)
    if bad:
        stop_diverged(job, f"{len(bad)} parameter or Adam moment array(s) hold inf or nan after the update "
                           f"({', '.join(bad[:3])})", epoch, step_in_epoch)
    job.global_step += 1
    if job.dist:
        job.dist.after_step(params, job.state, job.global_step)   # replicas compared every K steps
    job.steps_run += 1
    job.train_seconds += time.perf_counter() - t0
    job.samples += job.dist.last_global_rows if job.dist else int(batch.label.shape[0])
    if job.cfg.log and job.global_step % job.cfg.log_every == 0:
        info.update(parameter_norms(params, grads, job.state))
    return loss, info


def stop_diverged(job: Job, problem: str, epoch: int, step_in_epoch: int) -> None:
    """Stop at the step that went wrong (engine/guards.py), naming the checkpoint that really is on disk."""
    if job.checkpoint_step is None:
        kept = "no checkpoint had been written yet"
    else:
        kept = f"the last good checkpoint (global step {job.checkpoint_step}) is kept in {job.out / 'checkpoint'}"
    raise TrainingError(f"{problem} at global step {job.global_step + 1} (epoch {epoch + 1}, batch "
                        f"{step_in_epoch}); {kept}")


def _reached_max_steps(cfg: RunConfig, global_step: int) -> bool:
    return bool(cfg.max_steps) and global_step >= cfg.max_steps


def total_steps(job: Job) -> int:
    """Steps the whole run will take (all epochs, or --max-steps if sooner)."""
    steps = job.cfg.epochs * job.reader.steps_per_epoch
    return min(steps, job.cfg.max_steps) if job.cfg.max_steps else steps


def parameter_norms(params: dict, grads: dict, state: AdamState) -> dict:
    """--log (the reference's): per parameter, the L2 norm of the weights, of the gradient and of the
    Adam moments m and v. A table's gradient is its batch rows as Adam got them (L2 and CowClip in); a
    dense weight's is the backward pass's (its L2 term is added inside the update)."""
    norms = {}
    for name, w in params.items():
        g = grads[name].rows if hasattr(grads[name], "rows") else grads[name]
        for what, array in (("weight", w), ("grad", g), ("m", state.m[name]), ("v", state.v[name])):
            norms[f"norm.{what}.{name}"] = float((array.astype("float64") ** 2).sum() ** 0.5)
    return norms


def profile_steps(job: Job) -> None:
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
        write_replace(job.out / "profile.txt", f"steps {first}-{last}\n" + text.getvalue())
        job.profiler = None
        print(f"[profile] steps {first}-{last}: {job.out / 'profile.txt'}", flush=True)


# --------------------------------------------------------------------------------------------
# what the loop writes: metrics.jsonl, the progress line, evaluations, checkpoints


def _append(path: Path, record: dict) -> None:
    append_line(path, json.dumps(json_safe(record), allow_nan=False))


def log_step(job: Job, epoch: int, loss: float, running: list, info: dict) -> None:
    if not job.writes:
        return
    record = {"type": "step", "epoch": epoch + 1, "step": job.global_step, "loss": loss,
              "running_loss": float(np.mean(running[-RUNNING:])), "lr": info["lr"],
              "lr_embed": job.step_config.lr_embed, "samples_per_s": job.samples_per_s,
              "elapsed": time.perf_counter() - job.started}
    record.update({k: v for k, v in info.items() if k.startswith(("audit.", "norm."))})
    _append(job.metrics_path, record)


def show_progress(job: Job, epoch: int, step: int, loss: float) -> None:
    if not job.writes:
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


def evaluate_now(job: Job, epoch: int) -> dict:
    """Test metrics of the current parameters, logged and printed. -> the record."""
    t0 = time.perf_counter()
    result = (job.dist.evaluate if job.dist else evaluate)(job.model, job.params, job.test, job.kernels)
    kill_point("evaluating", job.global_step)
    record = {"type": "eval", "epoch": epoch + 1, "step": job.global_step, **result,
              "eval_seconds": time.perf_counter() - t0, "elapsed": time.perf_counter() - job.started,
              "samples_per_s": job.samples_per_s}
    bayes = job.bayes
    if bayes:
        record["bayes_auc"], record["bayes_logloss"] = bayes.get("test_auc"), bayes.get("test_logloss")
    if job.early is not None:
        observe_valid(job, epoch, record)
    if job.writes:
        _append(job.metrics_path, record)
    kill_point("eval", job.global_step)
    beside = f"  (Bayes-optimal AUC {bayes['test_auc']:.4f}, logloss {bayes['test_logloss']:.4f})" if bayes else ""
    print(f"[eval] epoch {epoch + 1} step {job.global_step}: test AUC {_auc_text(result)}, logloss "
          f"{_number(result['logloss'])}, NE {_number(result['ne'])}, calibration {_number(result['calibration'])}"
          f"{beside}; "
          f"{record['samples_per_s']:,.0f} samples/s, {record['elapsed']:.0f}s elapsed", flush=True)
    if job.stopped:
        print(f"[early stop] {job.cfg.early_stop} evaluations without a better valid AUC; the best was "
              f"{job.early.best_valid_auc:.5f} at step {job.early.best_step}", flush=True)
    return record


def observe_valid(job: Job, epoch: int, record: dict) -> None:
    """--early-stop: valid metrics into `record`; a new best is checkpointed into RUN/best/pending, made
    RUN/best/checkpoint by the next checkpoint of the run (engine/early_stop.py)."""
    valid = evaluate(job.model, job.params, job.valid, job.kernels)
    record.update({f"valid_{k}": v for k, v in valid.items()})
    if job.early.observe(valid["auc"], job.global_step):
        position = {"epoch": epoch, "step_in_epoch": 0, "global_step": job.global_step}
        save_checkpoint(best_dir(job.out), job.params, job.state, position, job.rng.bit_generator.state,
                        job.kernels.to_host, name=PENDING)
        kill_point("best", job.global_step)
    job.early.save(job.out)
    job.stopped = job.early.should_stop


def best_test_metrics(job: Job) -> dict:
    """Test metrics of the checkpoint in RUN/best/ (the best valid AUC), for final_metrics.json."""
    params, _, info = load_checkpoint(job.out / "best", job.kernels.xp.asarray)
    result = evaluate(job.model, params, job.test, job.kernels)
    record = {"type": "best", "step": info["global_step"], "valid_auc": job.early.best_valid_auc, **result}
    if job.bayes:
        record["bayes_auc"], record["bayes_logloss"] = job.bayes.get("test_auc"), job.bayes.get("test_logloss")
    _append(job.metrics_path, record)
    print(f"[best] step {record['step']} (valid AUC {record['valid_auc']:.5f}): test AUC {_auc_text(result)}, "
          f"logloss {_number(result['logloss'])}, NE {_number(result['ne'])}, "
          f"calibration {_number(result['calibration'])}; "
          f"checkpoint {job.out / 'best'}", flush=True)
    return record


def _auc_text(result: dict) -> str:
    return f"{result['auc']:.5f}" if result["auc"] is not None else f"undefined ({result['auc_undefined']})"


def _number(value) -> str:
    return "undefined" if value is None else f"{value:.5f}"


def save(job: Job, epoch: int, step_in_epoch: int) -> None:
    """Checkpoint the parameters, Adam state, data position and RNG (an epoch's end as the next's start)."""
    if step_in_epoch == job.reader.steps_per_epoch:
        epoch, step_in_epoch = epoch + 1, 0
    position = {"epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": job.global_step}
    params, state = job.dist.full_state(job.params, job.state) if job.dist else (job.params, job.state)
    if job.writes:   # rank 0, with whole tables gathered from the shards
        fsync_file(job.metrics_path)   # the lines the checkpoint counts are on disk before it is
        lines = job.metrics_path.read_bytes().count(b"\n")
        save_checkpoint(job.out, params, state, position, job.rng.bit_generator.state, job.kernels.to_host,
                        run_state=run_state(lines, job.early, job.last_eval, job.running))
        kill_point("checkpoint", job.global_step)
        if job.early is not None:
            settle_best(job.out, job.early.best_step)
    job.checkpoint_step = job.global_step


# --------------------------------------------------------------------------------------------
# the command line


def _both(name: str, *more, **kwargs):
    """An option spelled as the reference does (--lr_embed) and with dashes (--lr-embed)."""
    spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else []) + list(more)
    return click.option(*spellings, name, **kwargs)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@_both("model", default="deepfm", show_default=True,
       help="lr, fm, wdl (WD), deepfm, dcn, dcnmix (= DCNv2, as the reference: DeepCTR's DCNMix), "
            "dcnv2full (full-rank DCN-v2); any case")
@_both("bs", default=1024, show_default=True, type=POSITIVE_INT, help="batch size (the reference's default)")
@_both("data", default=None, help="dataset directory (dataio format); default: the built-in synthetic set")
@_both("dataset", default=None,
       help="criteo_kaggle | avazu | synthetic: picks the base hyperparameters; default: the kind in the "
            "data's meta.json (a --dataset that contradicts it is an error)")
@_both("lr", default=None, type=NON_NEGATIVE, help="dense learning rate (default: from --scale-rule)")
@_both("lr_embed", default=None, type=NON_NEGATIVE, help="embedding learning rate (default: from --scale-rule)")
@_both("l2", default=None, type=NON_NEGATIVE, help="L2 weight lambda on tables and the linear kernel")
@_both("clip", default=None, type=NON_NEGATIVE, help="CowClip r; 0 turns CowClip off")
@_both("bound", default=None, type=NON_NEGATIVE,
       help="CowClip zeta: in --clip-form reference (default) the reference's --bound, used as "
            "min_w = r*sqrt(dim)*bound; in --clip-form paper the floor zeta itself")
@_both("clip_form", default="reference", show_default=True, type=click.Choice(["reference", "paper"]))
@_both("warmup", default=None, type=NON_NEGATIVE, help="epochs of linear dense-lr warm-up")
@_both("init_stddev", default=None, type=NON_NEGATIVE, help="embedding init stddev (default 1e-2 under cowclip, else 1e-4)")
@_both("epoch", "--epochs", default=None, type=POSITIVE_INT,
       help=f"epochs (default {REFERENCE_EPOCHS}; {SYNTHETIC_EPOCHS} on the built-in synthetic set)")
@_both("sparse_embed_dim", default=10, show_default=True, type=POSITIVE_INT)
@_both("dropout", default=0.0, show_default=True, type=PROBABILITY_BELOW_ONE)
@_both("seed", default=1235, show_default=True, type=SEED)
@_both("split", default=None,
       help="rand | seq | highfreq | x4: must match the split recorded in the data's meta.json (preprocessing "
            "makes the split; default: the recorded one)")
@_both("device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@_both("scale_rule", default="auto", show_default=True, type=click.Choice(list(CLI_RULES)),
       help="auto: the reference train.py's defaults when --bs equals --base-bs, else cowclip; "
            "none | sqrt | linear | cowclip: scale from the dataset's base at --base-bs")
@_both("base_bs", default=1024, show_default=True, type=POSITIVE_INT)
@_both("embed_optim", default="dense", show_default=True, type=click.Choice(["dense", "lazy"]),
       help="dense: the reference's table-wide L2 and Adam on every row; lazy: only the batch's rows")
@_both("out", default=None, help="run directory (default runs/<model>-bs<bs>-<time>)")
@click.option("--resume", is_flag=True, help="continue the run in --out from its checkpoint")
@click.option("--overwrite", is_flag=True, help="replace the run already in --out (its checkpoint and logs)")
@_both("eval_every", default=0, type=COUNT, help="evaluate every N steps (default: at each epoch's end)")
@_both("accum", default=1, show_default=True, type=POSITIVE_INT, help="process each batch as N micro-batches (exact)")
@_both("audit", is_flag=True, help="log CowClip statistics at each logged step")
@_both("log_every", "--log_freq", "--log-freq", default=None, type=POSITIVE_INT,
       help=f"a metrics.jsonl line every N steps (default {LOG_EVERY}; the reference's --log_freq, whose default "
            f"is 100, sets the same cadence of its TensorBoard scalars)")
@_both("opt", default="adam", show_default=True,
       help="optimizer, as the reference's --opt: only adam (Keras Adam) is implemented there and here; "
            "any other value stops with an error")
@_both("log", is_flag=True,
       help="as the reference's --log: per-parameter norms of weights, gradients and Adam m, v in "
            "metrics.jsonl at each logged step")
@_both("eager", is_flag=True,
       help="accepted for the reference's command lines (Keras run_eagerly); this engine always runs eagerly, "
            "so it changes nothing")
@_both("profile", is_flag=True,
       help="as the reference's --profile (batches 80-100): cProfile over steps 80-100 into RUN/profile.txt")
@_both("early_stop", default=0, type=COUNT,
       help="stop after N evaluations without a better valid AUC; keeps RUN/best/ and reports its test metrics "
            "(needs a 'valid' split)")
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False),
       help="re-run a saved RUN/config.json; flags given on the command line win over it")
@_both("checkpoint_every", default=0, type=COUNT, help="also checkpoint every N steps (always at epoch ends)")
@_both("max_steps", default=0, type=COUNT, help="stop after N steps (0: run all epochs)")
@_both("dist", default="none", show_default=True, type=click.Choice(["none", "mpi"]),
       help="mpi: data-parallel over the ranks of `mpiexec -n N` (engine/dist; pip install -e '.[mpi]')")
@_both("shard_tables", is_flag=True, help="with --dist mpi: rank r holds the table rows with row %% N == r")
@_both("check_replicas_every", default=50, show_default=True, type=COUNT,
       help="with --dist mpi: compare the replicas' digests every K steps (0: never)")
@click.pass_context
def main(ctx, **opts):
    """Train a CTR model with CowClip and evaluate it on the test split."""
    overwrite = opts.pop("overwrite")
    dist = None
    try:
        dist = _connect(opts)
        root = dist is None or dist.is_root   # under MPI rank 0 alone claims, locks and writes the run directory
        opts = apply_config_file(ctx, opts)
        if opts["out"] and root:   # first, so that a run already there is refused before any other check
            claim_run_dir(Path(opts["out"]), opts["resume"], overwrite)
        cfg, out = resolve(opts, explicit_options(ctx, opts))
        if dist:
            if cfg.early_stop:
                raise ValueError("--early-stop with --dist mpi is not supported: train on one process to use it")
            dist.settle(cfg, opts["resume"])
            out = dist.agree(out)   # rank 0's run directory (its default name has the time in it)
        elif opts["resume"] and cfg.ranks > 1:
            from engine.dist import refuse_resume_without_mpi

            refuse_resume_without_mpi(cfg)
        if not opts["out"] and root:
            claim_run_dir(out, opts["resume"], overwrite)
        with locked(out) if root else contextlib.nullcontext():
            if overwrite and root:
                clear_run_files(out)
            if opts["resume"]:
                refuse_finished_run(out, cfg, root)
            if dist:
                dist.comm.barrier()   # the other ranks read the run directory once rank 0 has recovered it
            final = run(cfg, out, opts["resume"], dist=dist)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError, OSError, TrainingError) as error:
        message = error.message if isinstance(error, TrainingError) else (
            str(error).strip().splitlines()[0] if str(error).strip() else repr(error))
        if dist and dist.size > 1:   # the other ranks may wait in a collective: stop them all
            click.echo(f"Error (rank {dist.rank}): {message}", err=True)
            dist.comm.abort(1)
        raise TrainingError(message)
    except MemoryError as error:  # the estimate (engine/footprint.py) is a lower bound; this is the rest
        raise TrainingError(f"out of memory: {str(error).strip() or 'an allocation failed'}; use a smaller --bs "
                            f"or --sparse_embed_dim, or --accum")
    bayes = f" (Bayes-optimal {final['bayes_auc']:.4f})" if final.get("bayes_auc") else ""
    which = f"best checkpoint (step {final['step']}) " if "valid_auc" in final else ""
    print(f"[done] {which}test AUC {_auc_text(final)}{bayes}, logloss {_number(final['logloss'])}, "
          f"{final['steps']} steps, {final['wall_seconds']:.0f}s; run directory {out}")


def explicit_options(ctx: click.Context, opts: dict) -> frozenset:
    """Names of the options the user gave (on the command line or through the environment), not defaults."""
    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return frozenset(name for name in opts if ctx.get_parameter_source(name) in given)


def refuse_finished_run(out: Path, cfg: RunConfig, root: bool = True) -> None:
    """--resume of a run whose checkpoint is at the end of its last epoch: nothing is left to train.
    root: this process may finish an interrupted checkpoint swap (under MPI, rank 0 alone)."""
    recovered = recover_checkpoint(out) if root else None
    if recovered:
        print(f"{out}: {recovered}")
    state = out / "checkpoint" / "state.json"
    if state.is_file():
        position = json.loads(state.read_text())
        if finished(out, cfg, position):
            raise TrainingError(f"{out}: the run already finished (global step {position.get('global_step')}); "
                                f"its results are in {out / 'final_metrics.json'}. Evaluate it with "
                                f"python -m engine.evaluate --run {out}, or train on with --max-steps N")


def apply_config_file(ctx: click.Context, opts: dict) -> dict:
    """--config FILE: the saved run's options, under the ones given on the command line."""
    path = opts.pop("config_file")
    if path is None:
        return opts
    if opts["resume"]:
        raise ValueError("--config and --resume: --resume already continues from the run's own config.json")
    given = {name for name in opts
             if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
    return options_from_config(opts, path, given)


def _connect(opts: dict):
    """--dist mpi -> engine.dist's Distributed for this rank; --dist none imports no MPI."""
    if opts["dist"] == "none" and not opts["shard_tables"]:
        return None
    from engine.dist import connect

    return connect(opts["dist"], opts["shard_tables"], opts["check_replicas_every"])


if __name__ == "__main__":
    from engine.runtime import configure_process

    configure_process()   # keep freed memory, quiet Numba threads (engine/runtime.py)
    main()
