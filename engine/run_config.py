"""What a training run is: `RunConfig`, every setting decided, and how command-line options become one.

The hyperparameters come from --scale-rule applied to the dataset's base (engine/scaling.py); any value
given on the command line wins. A resumed run takes its saved config.json.
"""
import json
import time
from dataclasses import dataclass
from pathlib import Path

from engine.scaling import DATASET_BASES, format_hyperparameters, scale_hyperparameters
from models import canonical_model_name

SYNTHETIC_EPOCHS = 4      # the built-in data set: the default job must end within 10 minutes on 2 cores
REFERENCE_EPOCHS = 10     # the reference train.py's default


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
    dist: str = "none"                # none | mpi (engine/dist)
    shard_tables: bool = False        # row-sharded tables over the ranks
    ranks: int = 1                    # N, recorded so that --resume runs on as many
    check_replicas_every: int = 50    # digest comparison of the replicas every K steps


def resolve(opts: dict) -> tuple[RunConfig, Path]:
    """Command-line options -> (RunConfig with every hyperparameter decided, run directory), printed once."""
    if opts["resume"]:
        return _resumed(opts)
    model = canonical_model_name(opts["model"])
    data = opts["data"]
    dataset = (opts["dataset"] or ("synthetic" if data is None else "criteo_kaggle")).lower()
    if dataset not in DATASET_BASES:
        raise ValueError(f"unknown --dataset {dataset!r}; choose one of {sorted(DATASET_BASES)}")
    if data is None:
        data = _builtin_data(dataset)
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
                    max_steps=opts["max_steps"], dist=opts.get("dist", "none"),
                    shard_tables=opts.get("shard_tables", False),
                    check_replicas_every=opts.get("check_replicas_every", 50))
    out = Path(opts["out"] or f"runs/{model}-bs{opts['bs']}-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"model {model}, batch {cfg.bs}, {epochs} epochs, scale rule {cfg.scale_rule} from base batch "
          f"{cfg.base_bs}, clip form {cfg.clip_form}, embedding optimizer {cfg.embed_optim}, accum {cfg.accum}")
    print(f"hyperparameters: {format_hyperparameters(hp)}  init_stddev={init_stddev:g}  "
          f"embed_dim={cfg.embed_dim}  dropout={cfg.dropout:g}  seed={cfg.seed}")
    return cfg, out


def _resumed(opts: dict) -> tuple[RunConfig, Path]:
    """The saved configuration of the run in --out; only --max-steps may be given anew."""
    if not opts["out"]:
        raise ValueError("--resume needs --out, the run directory to continue")
    saved = json.loads((Path(opts["out"]) / "config.json").read_text())
    for derived in ("step_config", "schema", "device_line"):
        saved.pop(derived, None)
    cfg = RunConfig(**saved)
    cfg.max_steps = opts["max_steps"]  # a resumed run may be given a new stopping point
    print(f"resuming {opts['out']}: {format_hyperparameters(cfg.hp)}")
    return cfg, Path(opts["out"])


def _builtin_data(dataset: str) -> str:
    """The built-in synthetic set's directory, generated on first use."""
    if dataset != "synthetic":
        raise ValueError(f"--dataset {dataset} needs --data DIR: preprocess the raw file first with "
                         f"python -m dataio.preprocess (see README)")
    from dataio.synthetic import ensure_default

    print("data: the built-in synthetic Criteo-shaped set (generated on first use)", flush=True)
    return str(ensure_default())
