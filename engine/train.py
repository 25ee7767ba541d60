"""The main job: train a CTR model with CowClip on a dataset directory, and evaluate it.

    python -m engine.train --model deepfm --bs 131072

With no --data it trains on the built-in synthetic, Criteo-shaped data set (generated once into
~/.cache/cowclip-engine, or $COWCLIP_CACHE, and reused). This is the one module that joins the
models, the data and the engine.

Hyperparameters: --scale-rule (default cowclip) computes lr, lr_embed, l2, clip, warmup and
init_stddev for --bs from the reference's Criteo base at --base-bs 1024 (engine/scaling.py);
any of them given on the command line wins. The reference train.py's flags are accepted as it
spells them (--lr_embed, --init_stddev, ...) and with dashes.
"""
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import numpy as np

from dataio.reader import Batch
from engine.accumulate import accumulated_loss_and_grads
from engine.backend import resolve_device
from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.cowclip import COWCLIP, ClipRule
from engine.layers.loss import sigmoid
from engine.metrics import auc, logloss
from engine.optim import AdamState
from engine.scaling import CRITEO_BASE, RULES, format_hyperparameters, scale_hyperparameters
from engine.step import StepConfig, apply_gradients
from models import ModelConfig, Schema, build_model, canonical_model_name

AVAZU_BASE = {"bs": 1024, "lr": 1e-4, "lr_embed": 1e-4, "l2": 1e-5, "clip": 1.0, "bound": 1e-4, "warmup": 0.0}
DATASET_BASES = {"criteo_kaggle": CRITEO_BASE, "criteo": CRITEO_BASE, "synthetic": CRITEO_BASE,
                 "avazu": AVAZU_BASE}
SYNTHETIC_EPOCHS = 4      # the built-in data set: the default job must end within 10 minutes on 2 cores
REFERENCE_EPOCHS = 10     # the reference train.py's default


class TrainingError(click.ClickException):
    """A run that must stop with a one-line explanation, not a traceback."""


@dataclass
class RunConfig:
    model: str
    bs: int
    epochs: int
    data: str
    dataset: str
    device: str
    seed: int
    hp: dict
    scale_rule: str
    base_bs: int
    embed_optim: str
    clip_form: str
    embed_dim: int
    dropout: float
    init_stddev: float
    accum: int
    eval_every: int
    log_every: int
    checkpoint_every: int
    audit: bool
    split: str
    max_steps: int


# --------------------------------------------------------------------------------------------
# evaluation


def predict(model, params, arrays: dict, kernels, batch_size: int = 65536):
    """Click probabilities (n,) of every row of `arrays`, on the backend's device."""
    xp = kernels.xp
    n = arrays["label"].shape[0]
    out = []
    for lo in range(0, n, batch_size):
        part = Batch(*(arrays[k][lo:lo + batch_size] for k in ("sparse", "dense", "label")))
        out.append(sigmoid(model.logits(params, part).astype(xp.float64)))
    return xp.concatenate(out)


def evaluate(model, params, arrays: dict, kernels) -> dict:
    prob = predict(model, params, arrays, kernels)
    return {"auc": auc(arrays["label"], prob), "logloss": logloss(arrays["label"], prob)}


# --------------------------------------------------------------------------------------------
# the loop


def _log(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _progress(epoch, epochs, step, steps, loss, rate, elapsed):
    bar_width = 20
    done = int(bar_width * step / max(steps, 1))
    line = (f"epoch {epoch + 1}/{epochs} [{'#' * done}{'.' * (bar_width - done)}] {step}/{steps} "
            f"loss {loss:.5f}  {rate:,.0f} samples/s  {elapsed:.0f}s")
    if sys.stderr.isatty():  # redraw one line on a terminal; whole lines in a log
        print("\r" + line, end="\n" if step == steps else "", file=sys.stderr, flush=True)
    else:
        print(line, file=sys.stderr, flush=True)


def run(cfg: RunConfig, out: Path, resume: bool, clip_rule: ClipRule = COWCLIP) -> dict:
    """Train and evaluate as cfg says, in run directory `out`. clip_rule: CowClip, or one of the
    scaling study's ablations (engine/cowclip.py)."""
    from dataio.meta import load_meta
    from dataio.reader import BatchReader, read_split

    kernels, device_line = resolve_device(cfg.device)
    print(device_line)
    meta = load_meta(cfg.data)
    schema = Schema.from_meta(meta)
    model = build_model(cfg.model, schema, ModelConfig(embed_dim=cfg.embed_dim, dropout=cfg.dropout,
                                                       init_stddev=cfg.init_stddev))
    xp = kernels.xp
    to_device = None if xp is np else xp.asarray
    reader = BatchReader(cfg.data, "train", cfg.bs, shuffle=True, seed=cfg.seed, to_device=to_device)
    steps_per_epoch = reader.steps_per_epoch
    step_config = StepConfig(lr=cfg.hp["lr"], lr_embed=cfg.hp["lr_embed"], l2=cfg.hp["l2"], clip=cfg.hp["clip"],
                             bound=cfg.hp["bound"], clip_form=cfg.clip_form, embed_optim=cfg.embed_optim,
                             warmup_updates=int(cfg.hp["warmup"] * steps_per_epoch), rule=clip_rule)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    (out / "config.json").write_text(json.dumps({**asdict(cfg), "step_config": asdict(step_config),
                                                 "schema": asdict(schema), "device_line": device_line},
                                                indent=2, default=str))
    test = {k: v for k, v in read_split(cfg.data, "test").items() if k in ("sparse", "dense", "label")}
    test = {k: xp.asarray(v) for k, v in test.items()}
    bayes = meta.get("bayes", {})

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
        metrics_path.write_text("")

    def checkpoint(epoch, step_in_epoch, global_step):
        if step_in_epoch == steps_per_epoch:
            epoch, step_in_epoch = epoch + 1, 0
        save_checkpoint(out, params, state, {"epoch": epoch, "step_in_epoch": step_in_epoch,
                                             "global_step": global_step}, rng.bit_generator.state, kernels.to_host)

    def run_eval(epoch, global_step, started):
        t0 = time.perf_counter()
        result = evaluate(model, params, test, kernels)
        record = {"type": "eval", "epoch": epoch + 1, "step": global_step, **result,
                  "eval_seconds": time.perf_counter() - t0, "elapsed": time.perf_counter() - started,
                  "samples_per_s": samples_seen[0] / max(train_seconds[0], 1e-9)}
        if bayes:
            record["bayes_auc"], record["bayes_logloss"] = bayes.get("test_auc"), bayes.get("test_logloss")
        _log(metrics_path, record)
        beside = f"  (Bayes-optimal AUC {bayes['test_auc']:.4f}, logloss {bayes['test_logloss']:.4f})" if bayes else ""
        print(f"[eval] epoch {epoch + 1} step {global_step}: test AUC {result['auc']:.5f}, logloss "
              f"{result['logloss']:.5f}{beside}; {record['samples_per_s']:,.0f} samples/s, "
              f"{record['elapsed']:.0f}s elapsed", flush=True)
        return record

    started = time.perf_counter()
    samples_seen, train_seconds = [0], [0.0]
    global_step = position["global_step"]
    last_eval = None
    for epoch in range(position["epoch"], cfg.epochs):
        start_step = position["step_in_epoch"] if epoch == position["epoch"] else 0
        running, tick = [], time.perf_counter()
        step_in_epoch = start_step
        for step_in_epoch, batch in enumerate(reader.iter_epoch(epoch, start_step), start=start_step + 1):
            t0 = time.perf_counter()
            if cfg.accum > 1:
                loss, grads = accumulated_loss_and_grads(model, params, batch, cfg.accum, kernels, rng)
            else:
                loss, grads = model.loss(params, batch, kernels, training=True, rng=rng)
            if not math.isfinite(loss):
                raise TrainingError(f"non-finite loss ({loss}) at global step {global_step + 1} (epoch {epoch + 1}, "
                                    f"batch {step_in_epoch}); the last good checkpoint is kept in {out / 'checkpoint'}")
            info = apply_gradients(model, params, grads, state, step_config, kernels, audit=cfg.audit)
            global_step += 1
            n = int(batch.label.shape[0])
            train_seconds[0] += time.perf_counter() - t0
            samples_seen[0] += n
            running.append(loss)
            elapsed = time.perf_counter() - started
            rate = samples_seen[0] / max(train_seconds[0], 1e-9)
            if global_step % cfg.log_every == 0 or step_in_epoch == steps_per_epoch:
                record = {"type": "step", "epoch": epoch + 1, "step": global_step, "loss": loss,
                          "running_loss": float(np.mean(running[-50:])), "lr": info["lr"],
                          "lr_embed": step_config.lr_embed, "samples_per_s": rate, "elapsed": elapsed}
                record.update({k: v for k, v in info.items() if k.startswith("audit.")})
                _log(metrics_path, record)
            if time.perf_counter() - tick > (1.0 if sys.stderr.isatty() else 15.0) or step_in_epoch == steps_per_epoch:
                _progress(epoch, cfg.epochs, step_in_epoch, steps_per_epoch, float(np.mean(running[-50:])),
                          rate, elapsed)
                tick = time.perf_counter()
            if cfg.eval_every and global_step % cfg.eval_every == 0:
                last_eval = run_eval(epoch, global_step, started)
            if cfg.checkpoint_every and global_step % cfg.checkpoint_every == 0:
                checkpoint(epoch, step_in_epoch, global_step)
            if cfg.max_steps and global_step >= cfg.max_steps:
                break
        if cfg.max_steps and global_step >= cfg.max_steps:
            checkpoint(epoch, step_in_epoch, global_step)
            break
        if not (cfg.eval_every and global_step % cfg.eval_every == 0):
            last_eval = run_eval(epoch, global_step, started)
        checkpoint(epoch, steps_per_epoch, global_step)
    if last_eval is None or last_eval["step"] != global_step:
        last_eval = run_eval(max(epoch, 0), global_step, started)
    final = {**last_eval, "steps": global_step, "wall_seconds": time.perf_counter() - started}
    (out / "final_metrics.json").write_text(json.dumps(final, indent=2))
    return final


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
def main(**opts):
    """Train a CTR model with CowClip and evaluate it on the test split."""
    try:
        cfg, out = resolve(opts)
        final = run(cfg, out, opts["resume"])
    except (ValueError, FileNotFoundError, KeyError, RuntimeError, OSError) as error:
        raise TrainingError(str(error).strip().splitlines()[0] if str(error).strip() else repr(error))
    bayes = f" (Bayes-optimal {final['bayes_auc']:.4f})" if final.get("bayes_auc") else ""
    print(f"[done] test AUC {final['auc']:.5f}{bayes}, logloss {final['logloss']:.5f}, "
          f"{final['steps']} steps, {final['wall_seconds']:.0f}s; run directory {out}")


def resolve(opts: dict) -> tuple[RunConfig, Path]:
    """Command-line options -> RunConfig with every hyperparameter decided, printed once."""
    model = canonical_model_name(opts["model"])
    if opts["resume"]:
        if not opts["out"]:
            raise ValueError("--resume needs --out, the run directory to continue")
        saved = json.loads((Path(opts["out"]) / "config.json").read_text())
        saved.pop("step_config", None), saved.pop("schema", None), saved.pop("device_line", None)
        cfg = RunConfig(**saved)
        cfg.max_steps = opts["max_steps"]  # a resumed run may be given a new stopping point
        print(f"resuming {opts['out']}: {format_hyperparameters(cfg.hp)}")
        return cfg, Path(opts["out"])
    data = opts["data"]
    dataset = (opts["dataset"] or ("synthetic" if data is None else "criteo_kaggle")).lower()
    if dataset not in DATASET_BASES:
        raise ValueError(f"unknown --dataset {dataset!r}; choose one of {sorted(DATASET_BASES)}")
    if data is None:
        if dataset not in ("synthetic",):
            raise ValueError(f"--dataset {dataset} needs --data DIR: preprocess the raw file first with "
                             f"python -m dataio.preprocess (see README)")
        from dataio.synthetic import ensure_default

        print("data: the built-in synthetic Criteo-shaped set (generated on first use)", flush=True)
        data = str(ensure_default())
    explicit = {k: opts[k] for k in ("lr", "lr_embed", "l2", "clip", "bound", "warmup")}
    base = dict(DATASET_BASES[dataset], bs=opts["base_bs"])
    hp = scale_hyperparameters(opts["scale_rule"], opts["bs"], base, explicit)
    init_stddev = opts["init_stddev"] if opts["init_stddev"] is not None else (
        1e-2 if opts["scale_rule"] == "cowclip" else 1e-4)
    epochs = opts["epoch"] if opts["epoch"] is not None else (
        SYNTHETIC_EPOCHS if dataset == "synthetic" else REFERENCE_EPOCHS)
    if opts["accum"] < 1 or opts["bs"] < opts["accum"]:
        raise ValueError(f"--accum must be between 1 and --bs, got {opts['accum']}")
    cfg = RunConfig(model=model, bs=opts["bs"], epochs=epochs, data=data, dataset=dataset, device=opts["device"],
                    seed=opts["seed"], hp=hp, scale_rule=opts["scale_rule"], base_bs=opts["base_bs"],
                    embed_optim=opts["embed_optim"], clip_form=opts["clip_form"], embed_dim=opts["sparse_embed_dim"],
                    dropout=opts["dropout"], init_stddev=init_stddev, accum=opts["accum"],
                    eval_every=opts["eval_every"], log_every=opts["log_every"],
                    checkpoint_every=opts["checkpoint_every"], audit=opts["audit"], split=opts["split"],
                    max_steps=opts["max_steps"])
    out = Path(opts["out"] or f"runs/{model}-bs{opts['bs']}-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"model {model}, batch {cfg.bs}, {epochs} epochs, scale rule {cfg.scale_rule} from base batch "
          f"{cfg.base_bs}, clip form {cfg.clip_form}, embedding optimizer {cfg.embed_optim}, accum {cfg.accum}")
    print(f"hyperparameters: {format_hyperparameters(hp)}  init_stddev={init_stddev:g}  "
          f"embed_dim={cfg.embed_dim}  dropout={cfg.dropout:g}  seed={cfg.seed}")
    return cfg, out


if __name__ == "__main__":
    from engine.runtime import configure_process

    configure_process()   # keep freed memory, quiet Numba threads (engine/runtime.py)
    main()
