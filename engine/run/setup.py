"""What a run checks and reads before its first step: a train split and batch that make sense, enough
memory, the saved config.json, the evaluation splits on the device, and the checkpoint to resume from."""
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path

from engine.cowclip import ClipRule
from engine.optim import AdamState, warmup_updates
from engine.run.checkpoint import load_checkpoint
from engine.run.config import RunConfig
from engine.run.directory import truncate_metrics
from engine.run.files import write_replace
from engine.run.footprint import check_fits, estimate
from engine.run.guards import check_train_rows, zero_clip_warning
from engine.step import StepConfig

SPLIT_ARRAYS = ("sparse", "dense", "label")


def check_set_up(cfg: RunConfig, model, reader, meta: dict, xp) -> None:
    """Before anything large is allocated: a train split and batch that make sense, a CowClip threshold
    that is not zero everywhere (a warning), and enough memory (engine/run/guards.py, footprint.py)."""
    check_train_rows(reader.num_rows, cfg.bs, cfg.data)
    warning = zero_clip_warning(cfg.hp["clip"], cfg.hp["bound"], cfg.init_stddev, model.has_embed_table)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    micro_batch = math.ceil(min(cfg.bs, reader.num_rows) / cfg.accum)
    parts = estimate(model, micro_batch, reader.num_rows if reader.in_memory else 0,
                     int(meta["splits"]["test"]["rows"]))
    check_fits(parts, xp)


def step_config_of(cfg: RunConfig, train_rows: int, clip_rule: ClipRule, resumed: Path | None = None) -> StepConfig:
    """The step's settings: the resolved hyperparameters, the warm-up counted in updates as the reference
    counts it (int(warmup * int(N / bs)) for N training rows), and with --loss-form keras TF's float32
    optimizer constants. resumed: the run directory of a resumed run, whose recorded warm-up length is kept
    (a run started by code that counted ceil(N / bs) batches an epoch continues as it started)."""
    hp = cfg.hp
    updates = warmup_updates(hp["warmup"], train_rows, cfg.bs)
    saved = _saved_warmup_updates(resumed) if resumed is not None else None
    if saved is not None and saved != updates:
        print(f"{resumed}: keeping the run's recorded warm-up of {saved} updates (counted now: {updates})")
        updates = saved
    return StepConfig(lr=hp["lr"], lr_embed=hp["lr_embed"], l2=hp["l2"], clip=hp["clip"], bound=hp["bound"],
                      clip_form=cfg.clip_form, embed_optim=cfg.embed_optim, warmup_updates=updates, rule=clip_rule,
                      keras_constants=cfg.loss_form == "keras")


def _saved_warmup_updates(out: Path) -> int | None:
    try:
        return int(json.loads((out / "config.json").read_text())["step_config"]["warmup_updates"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_config(out: Path, cfg: RunConfig, step_config, schema, device_line: str, fingerprint: str) -> None:
    """RUN/config.json: every resolved setting, what the step was built with, the data's fingerprint and
    the digest of its vocabularies (engine.evaluate refuses data whose ids mean other things)."""
    from dataio.meta import vocabulary_digest

    out.mkdir(parents=True, exist_ok=True)
    write_replace(out / "config.json", json.dumps({**asdict(cfg), "step_config": asdict(step_config),
                                                   "schema": asdict(schema), "device_line": device_line,
                                                   "data_fingerprint": fingerprint,
                                                   "vocab_digest": vocabulary_digest(cfg.data)},
                                                  indent=2, default=str))


def split_on_device(data: str, split: str, xp) -> dict:
    """The arrays of one split (test, valid) on the run's device."""
    from dataio.reader import read_split

    return {k: xp.asarray(v) for k, v in read_split(data, split).items() if k in SPLIT_ARRAYS}


def resume_from_checkpoint(out: Path, model, xp, is_root: bool = True) -> tuple[dict, AdamState, dict]:
    """The checkpoint in `out`, checked against the model, and metrics.jsonl cut back to the lines it
    counted. -> (params, Adam state, position). An interrupted swap was finished before, by
    engine/run/phases.py starts_over. is_root: this process may change the run directory (under MPI,
    rank 0 alone; the others only read)."""
    params, state, position = load_checkpoint(out, xp.asarray, model.param_shapes())
    lines = (position.get("run") or {}).get("metrics_lines")
    dropped = truncate_metrics(out / "metrics.jsonl", position["global_step"], lines) if is_root else 0
    print(f"resumed from {out / 'checkpoint'} at epoch {position['epoch'] + 1}, step {position['step_in_epoch']} "
          f"(global step {position['global_step']})" + (f"; dropped {dropped} metrics.jsonl line(s) logged "
                                                        f"after it" if dropped else ""))
    return params, state, position
