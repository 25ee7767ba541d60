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

Hyperparameters: --scale-rule (default cowclip) computes lr, lr_embed, l2, clip, warmup and
init_stddev for --bs from the dataset's base at --base-bs 1024 (engine/scaling.py, resolved in
engine/run_config.py); any of them given on the command line wins. The reference train.py's flags
are accepted as it spells them (--lr_embed, --init_stddev, ...) and with dashes.
"""
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click
import numpy as np

from engine.accumulate import accumulated_loss_and_grads
from engine.backend import resolve_device
from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.errors import TrainingError
from engine.evaluate import evaluate
from engine.optim import AdamState
from engine.run_config import REFERENCE_EPOCHS, SYNTHETIC_EPOCHS, RunConfig, resolve
from engine.scaling import RULES
from engine.step import StepConfig, apply_gradients
from models import ModelConfig, Schema, build_model


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


def run(cfg: RunConfig, out: Path, resume: bool, dist=None, **clip_hooks) -> dict:
    """Train and evaluate as cfg says, in run directory `out`. clip_hooks: `clip` and `constants`
    for engine.step.apply_gradients (the scaling study's ablations); CowClip when absent.
    dist: engine.dist's Distributed for this rank of an MPI run, or None."""
    job, position = prepare(cfg, out, resume, dist)
    steps_per_epoch = job.reader.steps_per_epoch
    last_eval = None
    epoch = position["epoch"]
    for epoch in range(position["epoch"], cfg.epochs):
        start_step = position["step_in_epoch"] if epoch == position["epoch"] else 0
        step_in_epoch, evaluated = train_epoch(job, epoch, start_step, clip_hooks)
        last_eval = evaluated or last_eval
        if _reached_max_steps(cfg, job.global_step):
            save(job, epoch, step_in_epoch)
            break
        if not (cfg.eval_every and job.global_step % cfg.eval_every == 0):
            last_eval = evaluate_now(job, epoch)
        save(job, epoch, steps_per_epoch)
    if last_eval is None or last_eval["step"] != job.global_step:
        last_eval = evaluate_now(job, max(epoch, 0))
    final = {**last_eval, "steps": job.global_step, "wall_seconds": time.perf_counter() - job.started}
    if dist:
        final.update(dist.summary(job.params, job.state))
    if job.writes:
        (out / "final_metrics.json").write_text(json.dumps(final, indent=2))
    return final


def prepare(cfg: RunConfig, out: Path, resume: bool, dist=None) -> tuple[Job, dict]:
    """Backend, data, model and the parameters to start from. -> (job, position in the data)."""
    from dataio.meta import load_meta
    from dataio.reader import BatchReader, read_split

    kernels, device_line = resolve_device(cfg.device)
    print(device_line)
    meta = load_meta(cfg.data)
    schema = Schema.from_meta(meta)
    model = build_model(cfg.model, schema, ModelConfig(embed_dim=cfg.embed_dim, dropout=cfg.dropout,
                                                       init_stddev=cfg.init_stddev))
    if dist:
        dist.attach(model, kernels)   # one GPU per rank, host staging, the table shards' routing
    xp = kernels.xp
    to_device = None if xp is np else xp.asarray
    reader = BatchReader(cfg.data, "train", cfg.bs, shuffle=True, seed=cfg.seed, to_device=to_device)
    if dist:
        reader = dist.wrap_reader(reader)   # this rank's rows of each global batch
    step_config = StepConfig(lr=cfg.hp["lr"], lr_embed=cfg.hp["lr_embed"], l2=cfg.hp["l2"], clip=cfg.hp["clip"],
                             bound=cfg.hp["bound"], clip_form=cfg.clip_form, embed_optim=cfg.embed_optim,
                             warmup_updates=int(cfg.hp["warmup"] * reader.steps_per_epoch))
    writes = dist is None or dist.is_root
    if writes:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({**asdict(cfg), "step_config": asdict(step_config),
                                                     "schema": asdict(schema), "device_line": device_line},
                                                    indent=2, default=str))
    test = {k: xp.asarray(v) for k, v in read_split(cfg.data, "test").items() if k in ("sparse", "dense", "label")}
    rng = np.random.default_rng(cfg.seed)
    if resume:
        params, state, position = load_checkpoint(out, xp.asarray)
        rng.bit_generator.state = position["rng"]
        print(f"resumed from {out / 'checkpoint'} at epoch {position['epoch'] + 1}, "
              f"step {position['step_in_epoch']} (global step {position['global_step']})")
    else:
        params = {k: xp.asarray(v) for k, v in model.init_params(cfg.seed).items()}
        state = AdamState.zeros_like(params, xp)
        position = {"epoch": 0, "step_in_epoch": 0, "global_step": 0}
        if writes:
            (out / "metrics.jsonl").write_text("")
    if dist:
        params, state = dist.place(params, state)   # --shard-tables: this rank's rows of the tables
    job = Job(cfg, out, model, kernels, reader, step_config, params, state, rng, test, meta.get("bayes", {}),
              global_step=position["global_step"], dist=dist)
    return job, position


def train_epoch(job: Job, epoch: int, start_step: int, clip_hooks: dict) -> tuple[int, dict | None]:
    """The batches of one epoch from `start_step` on. -> (last step in the epoch, last evaluation or None)."""
    cfg, steps_per_epoch = job.cfg, job.reader.steps_per_epoch
    running, tick, last_eval = [], time.perf_counter(), None
    step_in_epoch = start_step
    for step_in_epoch, batch in enumerate(job.reader.iter_epoch(epoch, start_step), start=start_step + 1):
        loss, info = take_step(job, batch, epoch, step_in_epoch, clip_hooks)
        running.append(loss)
        epoch_end = step_in_epoch == steps_per_epoch
        if job.global_step % cfg.log_every == 0 or epoch_end:
            log_step(job, epoch, loss, running, info)
        if time.perf_counter() - tick > (1.0 if sys.stderr.isatty() else 15.0) or epoch_end:
            show_progress(job, epoch, step_in_epoch, float(np.mean(running[-50:])))
            tick = time.perf_counter()
        if cfg.eval_every and job.global_step % cfg.eval_every == 0:
            last_eval = evaluate_now(job, epoch)
        if cfg.checkpoint_every and job.global_step % cfg.checkpoint_every == 0:
            save(job, epoch, step_in_epoch)
        if _reached_max_steps(cfg, job.global_step):
            break
    return step_in_epoch, last_eval


def take_step(job: Job, batch, epoch: int, step_in_epoch: int, clip_hooks: dict) -> tuple[float, dict]:
    """Loss and gradients of one batch, then Algorithm 1's update (engine/step.py). -> (loss, step info)."""
    t0 = time.perf_counter()
    model, params, kernels = job.model, job.params, job.kernels
    if job.dist:   # this rank's rows -> the global batch's loss and gradients, the same on every rank
        loss, grads = job.dist.loss_and_grads(model, params, batch, kernels, job.rng, job.cfg.accum)
    elif job.cfg.accum > 1:
        loss, grads = accumulated_loss_and_grads(model, params, batch, job.cfg.accum, kernels, job.rng)
    else:
        loss, grads = model.loss(params, batch, kernels, training=True, rng=job.rng)
    if not math.isfinite(loss):
        raise TrainingError(f"non-finite loss ({loss}) at global step {job.global_step + 1} (epoch {epoch + 1}, "
                            f"batch {step_in_epoch}); the last good checkpoint is kept in {job.out / 'checkpoint'}")
    info = apply_gradients(model, params, grads, job.state, job.step_config, kernels, audit=job.cfg.audit,
                           **clip_hooks)
    job.global_step += 1
    if job.dist:
        job.dist.after_step(params, job.state, job.global_step)   # replicas compared every K steps
    job.train_seconds += time.perf_counter() - t0
    job.samples += job.dist.last_global_rows if job.dist else int(batch.label.shape[0])
    return loss, info


def _reached_max_steps(cfg: RunConfig, global_step: int) -> bool:
    return bool(cfg.max_steps) and global_step >= cfg.max_steps


# --------------------------------------------------------------------------------------------
# what the loop writes: metrics.jsonl, the progress line, evaluations, checkpoints


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def log_step(job: Job, epoch: int, loss: float, running: list, info: dict) -> None:
    if not job.writes:
        return
    record = {"type": "step", "epoch": epoch + 1, "step": job.global_step, "loss": loss,
              "running_loss": float(np.mean(running[-50:])), "lr": info["lr"],
              "lr_embed": job.step_config.lr_embed, "samples_per_s": job.samples_per_s,
              "elapsed": time.perf_counter() - job.started}
    record.update({k: v for k, v in info.items() if k.startswith("audit.")})
    _append(job.metrics_path, record)


def show_progress(job: Job, epoch: int, step: int, loss: float) -> None:
    if not job.writes:
        return
    steps, bar_width = job.reader.steps_per_epoch, 20
    done = int(bar_width * step / max(steps, 1))
    line = (f"epoch {epoch + 1}/{job.cfg.epochs} [{'#' * done}{'.' * (bar_width - done)}] {step}/{steps} "
            f"loss {loss:.5f}  {job.samples_per_s:,.0f} samples/s  {time.perf_counter() - job.started:.0f}s")
    if sys.stderr.isatty():  # redraw one line on a terminal; whole lines in a log
        print("\r" + line, end="\n" if step == steps else "", file=sys.stderr, flush=True)
    else:
        print(line, file=sys.stderr, flush=True)


def evaluate_now(job: Job, epoch: int) -> dict:
    """Test metrics of the current parameters, logged and printed. -> the record."""
    t0 = time.perf_counter()
    result = (job.dist.evaluate if job.dist else evaluate)(job.model, job.params, job.test, job.kernels)
    record = {"type": "eval", "epoch": epoch + 1, "step": job.global_step, **result,
              "eval_seconds": time.perf_counter() - t0, "elapsed": time.perf_counter() - job.started,
              "samples_per_s": job.samples_per_s}
    bayes = job.bayes
    if bayes:
        record["bayes_auc"], record["bayes_logloss"] = bayes.get("test_auc"), bayes.get("test_logloss")
    if job.writes:
        _append(job.metrics_path, record)
    beside = f"  (Bayes-optimal AUC {bayes['test_auc']:.4f}, logloss {bayes['test_logloss']:.4f})" if bayes else ""
    print(f"[eval] epoch {epoch + 1} step {job.global_step}: test AUC {result['auc']:.5f}, logloss "
          f"{result['logloss']:.5f}{beside}; {record['samples_per_s']:,.0f} samples/s, "
          f"{record['elapsed']:.0f}s elapsed", flush=True)
    return record


def save(job: Job, epoch: int, step_in_epoch: int) -> None:
    """Checkpoint the parameters, Adam state, data position and RNG (an epoch's end as the next's start)."""
    if step_in_epoch == job.reader.steps_per_epoch:
        epoch, step_in_epoch = epoch + 1, 0
    position = {"epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": job.global_step}
    params, state = job.dist.full_state(job.params, job.state) if job.dist else (job.params, job.state)
    if job.writes:   # rank 0, with whole tables gathered from the shards
        save_checkpoint(job.out, params, state, position, job.rng.bit_generator.state, job.kernels.to_host)


# --------------------------------------------------------------------------------------------
# the command line


def _both(name: str, *more, **kwargs):
    """An option spelled as the reference does (--lr_embed) and with dashes (--lr-embed)."""
    spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else []) + list(more)
    return click.option(*spellings, name, **kwargs)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@_both("model", default="deepfm", show_default=True,
       help="lr, fm, wdl (WD), deepfm, dcn, dcnv2 (full-rank DCN-v2), dcnmix (the reference's 'DCNv2'); any case")
@_both("bs", default=131072, show_default=True, type=int, help="batch size")
@_both("data", default=None, help="dataset directory (dataio format); default: the built-in synthetic set")
@_both("dataset", default=None, help="criteo_kaggle | avazu | synthetic: picks the base hyperparameters")
@_both("lr", default=None, type=float, help="dense learning rate (default: from --scale-rule)")
@_both("lr_embed", default=None, type=float, help="embedding learning rate (default: from --scale-rule)")
@_both("l2", default=None, type=float, help="L2 weight lambda on tables and the linear kernel")
@_both("clip", default=None, type=float, help="CowClip r; 0 turns CowClip off")
@_both("bound", default=None, type=float,
       help="CowClip zeta: in --clip-form reference (default) the reference's --bound, used as "
            "min_w = r*sqrt(dim)*bound; in --clip-form paper the floor zeta itself")
@_both("clip_form", default="reference", show_default=True, type=click.Choice(["reference", "paper"]))
@_both("warmup", default=None, type=float, help="epochs of linear dense-lr warm-up")
@_both("init_stddev", default=None, type=float, help="embedding init stddev (default 1e-2 under cowclip, else 1e-4)")
@_both("epoch", "--epochs", default=None, type=int,
       help=f"epochs (default {REFERENCE_EPOCHS}; {SYNTHETIC_EPOCHS} on the built-in synthetic set)")
@_both("sparse_embed_dim", default=10, show_default=True, type=int)
@_both("dropout", default=0.0, show_default=True, type=float)
@_both("seed", default=1235, show_default=True, type=int)
@_both("split", default="rand", show_default=True, help="recorded for comparison; the split is made by preprocessing")
@_both("device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@_both("scale_rule", default="cowclip", show_default=True, type=click.Choice(list(RULES)))
@_both("base_bs", default=1024, show_default=True, type=int)
@_both("embed_optim", default="dense", show_default=True, type=click.Choice(["dense", "lazy"]),
       help="dense: the reference's table-wide L2 and Adam on every row; lazy: only the batch's rows")
@_both("out", default=None, help="run directory (default runs/<model>-bs<bs>-<time>)")
@click.option("--resume", is_flag=True, help="continue the run in --out from its checkpoint")
@_both("eval_every", default=0, type=int, help="evaluate every N steps (default: at each epoch's end)")
@_both("accum", default=1, show_default=True, type=int, help="process each batch as N micro-batches (exact)")
@_both("audit", is_flag=True, help="log CowClip statistics at each logged step")
@_both("log_every", default=10, show_default=True, type=int)
@_both("checkpoint_every", default=0, type=int, help="also checkpoint every N steps (always at epoch ends)")
@_both("max_steps", default=0, type=int, help="stop after N steps (0: run all epochs)")
@_both("dist", default="none", show_default=True, type=click.Choice(["none", "mpi"]),
       help="mpi: data-parallel over the ranks of `mpiexec -n N` (engine/dist; pip install -e '.[mpi]')")
@_both("shard_tables", is_flag=True, help="with --dist mpi: rank r holds the table rows with row %% N == r")
@_both("check_replicas_every", default=50, show_default=True, type=int,
       help="with --dist mpi: compare the replicas' digests every K steps (0: never)")
def main(**opts):
    """Train a CTR model with CowClip and evaluate it on the test split."""
    dist = None
    try:
        dist = _connect(opts)
        cfg, out = resolve(opts)
        if dist:
            dist.settle(cfg, opts["resume"])
            out = dist.agree(out)   # rank 0's run directory (its default name has the time in it)
        elif opts["resume"] and cfg.ranks > 1:
            from engine.dist import refuse_resume_without_mpi

            refuse_resume_without_mpi(cfg)
        final = run(cfg, out, opts["resume"], dist)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError, OSError, TrainingError) as error:
        message = error.message if isinstance(error, TrainingError) else (
            str(error).strip().splitlines()[0] if str(error).strip() else repr(error))
        if dist and dist.size > 1:   # the other ranks may wait in a collective: stop them all
            click.echo(f"Error (rank {dist.rank}): {message}", err=True)
            dist.comm.abort(1)
        raise TrainingError(message)
    bayes = f" (Bayes-optimal {final['bayes_auc']:.4f})" if final.get("bayes_auc") else ""
    print(f"[done] test AUC {final['auc']:.5f}{bayes}, logloss {final['logloss']:.5f}, "
          f"{final['steps']} steps, {final['wall_seconds']:.0f}s; run directory {out}")


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
