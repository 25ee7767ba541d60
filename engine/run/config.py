"""What a training run is: `RunConfig`, every setting decided, and how command-line options become one.

The hyperparameters come from --scale-rule applied to the dataset's base (engine/scaling.py); any value
given on the command line wins. The default rule, `auto`, trains the reference train.py's defaults at
the base batch (its baseline command) and the CowClip rule at any other batch. The dataset kind and its
split come from the data's meta.json. A resumed run takes its saved config.json; --config takes a saved
config.json too, with the flags given on the command line winning.
"""
import time
from dataclasses import dataclass
from pathlib import Path

from engine.run.reference import differences_line
from engine.run.settings import OPTION_OF_FIELD, read_settings
from engine.scaling import (DATASET_BASES, default_init_stddev, format_hyperparameters, resolve_auto,
                            scale_hyperparameters)
from models import canonical_model_name

SYNTHETIC_EPOCHS = 4      # the built-in data set: the default job must end within 10 minutes on 2 cores
REFERENCE_EPOCHS = 10     # the reference train.py's default
# options a resumed run may take anew; any other given on the command line must equal the saved value
RESUME_MAY_CHANGE = ("out", "resume", "max_steps", "device")
LOG_EVERY = 10            # steps between metrics.jsonl lines (the reference's --log_freq is 100)
OPTIMIZERS = ("adam",)    # the reference's --opt: it implements adam only, and so do we
GENERATION_SECONDS_PER_MROW = 4.0   # the built-in set: 4M rows in 13-19 s on the 2-core machine (README)
# meta.json's kind -> the --dataset names that agree with it (the synthetic set is Criteo-shaped)
DATASETS_OF_KIND = {"criteo": ("criteo_kaggle", "criteo"), "avazu": ("avazu",),
                    "synthetic": ("synthetic", "criteo_kaggle", "criteo")}
DATASET_OF_KIND = {"criteo": "criteo_kaggle", "avazu": "avazu", "synthetic": "synthetic"}


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
    early_stop: int = 0      # stop after this many evaluations without a better valid AUC (0: never)
    log: bool = False        # per-parameter norms in metrics.jsonl (the reference's --log)
    profile: bool = False    # profile steps 80-100 into profile.txt (the reference's --profile)
    opt: str = "adam"
    dist: str = "none"                # none | mpi (engine/dist)
    shard_tables: bool = False        # row-sharded tables over the ranks
    ranks: int = 1                    # N, recorded so that --resume runs on as many
    check_replicas_every: int = 50    # digest comparison of the replicas every K steps
    loss_form: str = "exact"          # exact | keras: Keras's clipped loss and TF's float32 optimizer constants


def resolve(opts: dict, explicit: frozenset = frozenset()) -> tuple[RunConfig, Path]:
    """Command-line options -> (RunConfig with every hyperparameter decided, run directory), printed once.
    explicit: the names of the options the user gave (not defaults); a resumed run checks them."""
    if opts["resume"]:
        return _resumed(opts, explicit)
    if opts.get("opt", "adam") not in OPTIMIZERS:
        raise ValueError(f"--opt {opts['opt']}: not implemented; the engine has {', '.join(OPTIMIZERS)} "
                         f"(Keras Adam, as the reference)")
    model = canonical_model_name(opts["model"])
    data, meta = _data_and_meta(opts)
    dataset = dataset_of(opts["dataset"], meta, data)
    split = split_of(opts["split"], meta, data)
    if opts.get("early_stop"):
        require_valid_split(meta, data)
    explicit = {k: opts[k] for k in ("lr", "lr_embed", "l2", "clip", "bound", "warmup")}
    base = dict(DATASET_BASES[dataset], bs=opts["base_bs"])
    hp = scale_hyperparameters(opts["scale_rule"], opts["bs"], base, explicit)
    rule_used = resolve_auto(opts["bs"], opts["base_bs"]) if opts["scale_rule"] == "auto" else opts["scale_rule"]
    init_stddev = opts["init_stddev"] if opts["init_stddev"] is not None else default_init_stddev(rule_used)
    epochs = opts["epoch"] if opts["epoch"] is not None else (
        SYNTHETIC_EPOCHS if dataset == "synthetic" else REFERENCE_EPOCHS)
    if opts["accum"] < 1 or opts["bs"] < opts["accum"]:
        raise ValueError(f"--accum must be between 1 and --bs, got {opts['accum']}")
    log_every = opts["log_every"] if opts["log_every"] is not None else LOG_EVERY
    cfg = RunConfig(model=model, bs=opts["bs"], epochs=epochs, data=data, dataset=dataset, device=opts["device"],
                    seed=opts["seed"], hp=hp, scale_rule=opts["scale_rule"], base_bs=opts["base_bs"],
                    embed_optim=opts["embed_optim"], clip_form=opts["clip_form"], embed_dim=opts["sparse_embed_dim"],
                    dropout=opts["dropout"], init_stddev=init_stddev, accum=opts["accum"],
                    eval_every=opts["eval_every"], log_every=log_every,
                    checkpoint_every=opts["checkpoint_every"], audit=opts["audit"], split=split,
                    max_steps=opts["max_steps"], early_stop=opts.get("early_stop") or 0,
                    log=bool(opts.get("log")), profile=bool(opts.get("profile")), opt=opts.get("opt") or "adam",
                    dist=opts.get("dist", "none"), shard_tables=opts.get("shard_tables", False),
                    check_replicas_every=opts.get("check_replicas_every", 50),
                    loss_form=opts.get("loss_form") or "exact")
    out = Path(opts["out"] or f"runs/{model}-bs{opts['bs']}-{time.strftime('%Y%m%d-%H%M%S')}")
    rule = cfg.scale_rule + (f" -> {rule_used}" if cfg.scale_rule == "auto" else "")
    print(f"model {model}, batch {cfg.bs}, {epochs} epochs, scale rule {rule} from base batch "
          f"{cfg.base_bs}, clip form {cfg.clip_form}, embedding optimizer {cfg.embed_optim}, accum {cfg.accum}, "
          f"loss form {cfg.loss_form}")
    print(f"hyperparameters: {format_hyperparameters(hp)}  init_stddev={init_stddev:g}  "
          f"embed_dim={cfg.embed_dim}  dropout={cfg.dropout:g}  seed={cfg.seed}")
    print(differences_line(cfg, opts, meta))
    return cfg, out


def _data_and_meta(opts: dict) -> tuple[str, dict]:
    """The dataset directory (the built-in set when --data is absent) and its validated meta.json."""
    from dataio.meta import load_meta

    data = opts["data"]
    if data is None:
        data = _builtin_data((opts["dataset"] or "synthetic").lower())
    return data, load_meta(data)


def dataset_of(flag: str | None, meta: dict, data: str) -> str:
    """--dataset, checked against meta.json's kind; the kind's name when --dataset is absent."""
    kind = meta["kind"]
    if flag is None:
        return DATASET_OF_KIND[kind]
    dataset = flag.lower()
    if dataset not in DATASET_BASES:
        raise ValueError(f"unknown --dataset {flag!r}; choose one of {sorted(DATASET_BASES)}")
    if dataset not in DATASETS_OF_KIND[kind]:
        raise ValueError(f"--dataset {flag} contradicts {Path(data) / 'meta.json'}, which records kind {kind!r}; "
                         f"drop --dataset (it is read from the data) or pass {DATASET_OF_KIND[kind]}")
    return dataset


def recorded_split(meta: dict) -> str:
    """How the data was split: preprocessing records --split (rand, seq, x4); synthetic sets are random."""
    return meta.get("options", {}).get("split") or "rand"


def split_of(flag: str | None, meta: dict, data: str) -> str:
    """--split must name the split the data was made with (preprocessing makes it, training cannot)."""
    recorded = recorded_split(meta)
    if flag == "highfreq":
        raise ValueError("--split highfreq: the reference's train.py lists it, but its data_utils.py makes only "
                         "rand and seq, so no dataset has it; use --split rand or seq")
    if recorded == "none":
        raise ValueError(f"{Path(data) / 'meta.json'}: made with --split none (every row in one split 'all', to "
                         f"score with engine.evaluate --split all); training needs a dataset with train and test")
    if flag is not None and flag != recorded:
        raise ValueError(f"--split {flag} contradicts {Path(data) / 'meta.json'}, which records split {recorded!r}; "
                         f"preprocess the raw file with --split {flag} into another directory to train on it")
    return recorded


def require_valid_split(meta: dict, data: str) -> None:
    if "valid" not in meta["splits"]:
        raise ValueError(f"--early-stop needs a 'valid' split, and {Path(data) / 'meta.json'} has only "
                         f"{sorted(meta['splits'])}; preprocess with a validation split (e.g. --preset criteo_x4)")


def _resumed(opts: dict, explicit: frozenset) -> tuple[RunConfig, Path]:
    """The saved configuration of the run in --out, checked as the command line's options are; only
    RESUME_MAY_CHANGE may be given anew, and what is not given anew stays as saved (--max-steps too)."""
    if not opts["out"]:
        raise ValueError("--resume needs --out, the run directory to continue")
    path = Path(opts["out"]) / "config.json"
    cfg = RunConfig(**read_settings(path))
    check_run_config(cfg, path)
    conflicts = resume_conflicts(cfg, opts, explicit)
    if conflicts:
        raise ValueError(f"--resume continues {opts['out']} as it was started; these options differ from its "
                         f"config.json: {'; '.join(conflicts)}. Drop them, or start a new run with another --out")
    if "max_steps" in explicit:   # a resumed run may be given a new stopping point; else it keeps its own
        cfg.max_steps = opts["max_steps"]
    if "device" in explicit:      # and another device (same arithmetic; bitwise only on the same one)
        cfg.device = opts["device"]
    print(f"resuming {opts['out']}: {format_hyperparameters(cfg.hp)}")
    return cfg, Path(opts["out"])


def check_run_config(cfg: RunConfig, source) -> None:
    """What no single option's range can say, for a config from any source (the command line, --config,
    a saved config.json): the options must agree with one another."""
    if cfg.accum > cfg.bs:
        raise ValueError(f"{source}: accum {cfg.accum} is larger than the batch ({cfg.bs}); it must be between "
                         f"1 and bs")
    if cfg.opt not in OPTIMIZERS:
        raise ValueError(f"{source}: opt {cfg.opt!r} is not implemented; the engine has {', '.join(OPTIMIZERS)} "
                         f"(Keras Adam, as the reference)")
    if cfg.dataset not in DATASET_BASES:
        raise ValueError(f"{source}: unknown dataset {cfg.dataset!r}; choose one of {sorted(DATASET_BASES)}")


def resume_conflicts(cfg: RunConfig, opts: dict, explicit: frozenset) -> list:
    """'--name X (run has Y)' for every option given explicitly whose value differs from the saved run."""
    conflicts = []
    for name in sorted(explicit):
        if name in RESUME_MAY_CHANGE:
            continue
        given, known, saved = opts[name], *_saved_value(cfg, name)
        if not known:
            conflicts.append(f"--{name} cannot be changed on --resume")
        elif not _same(name, given, saved):
            conflicts.append(f"--{name} {given} (run has {saved})")
    return conflicts


# command-line name -> RunConfig field, where they differ
_FIELD_OF = {"epoch": "epochs", "sparse_embed_dim": "embed_dim"}
_HP = ("lr", "lr_embed", "l2", "clip", "bound", "warmup")


def _saved_value(cfg: RunConfig, name: str) -> tuple:
    """-> (whether the run records this option, its saved value)."""
    if name in _HP:
        return True, cfg.hp[name]
    field_name = _FIELD_OF.get(name, name)
    return (True, getattr(cfg, field_name)) if hasattr(cfg, field_name) else (False, None)


def _same(name: str, given, saved) -> bool:
    if name == "model":
        return canonical_model_name(given) == saved
    if name == "data":
        return Path(given).resolve() == Path(saved).resolve()
    if name == "dataset":
        return str(given).lower() == saved
    if isinstance(saved, float) or isinstance(given, float):
        return float(given) == float(saved)
    return given == saved


# --config: the hyperparameters the scaling rule derives from the options it reads
_DERIVED = ("lr", "lr_embed", "l2", "clip", "bound", "warmup", "init_stddev")
_RULE_INPUTS = ("bs", "base_bs", "scale_rule", "dataset")


def options_from_config(opts: dict, path: str, given: set) -> dict:
    """--config RUN/config.json: the saved run's settings as options, the flags in `given` winning; the
    result goes through resolve() as a command line does, so it resolves exactly as that command line.

    The saved run's derived values (lr, lr_embed, l2, clip, bound, warmup, init_stddev) are taken as it
    resolved them, unless a flag that the scaling rule reads (--bs, --base-bs, --scale-rule, --dataset)
    is given: then the rule derives all of them anew, as it would with no --config."""
    rederive = bool(given & set(_RULE_INPUTS))
    saved = read_settings(path, may_omit=frozenset(given) | ({"hp", "init_stddev"} if rederive else set()))
    merged = dict(opts)
    for name, value in saved.items():
        option = OPTION_OF_FIELD.get(name, name)
        if name == "hp" or option in _DERIVED:
            continue
        if option in merged and option not in given:
            merged[option] = value
    if not rederive:
        for key in _DERIVED:
            if key not in given:
                merged[key] = saved["init_stddev"] if key == "init_stddev" else saved["hp"][key]
    print(f"configuration from {path} (flags given on the command line win: "
          f"{', '.join(sorted(given)) or 'none'})")
    return merged


def _builtin_data(dataset: str) -> str:
    """The built-in synthetic set's directory, generated on first use (and announced: it takes a while)."""
    if dataset != "synthetic":
        raise ValueError(f"--dataset {dataset} needs --data DIR: preprocess the raw file first with "
                         f"python -m dataio.preprocess (see README)")
    from dataio.meta import MetaError, load_meta
    from dataio.synthetic import SyntheticConfig, config_hash, default_cache_dir, ensure_default

    cfg = SyntheticConfig()
    path = default_cache_dir() / f"synthetic-{cfg.rows}-s{cfg.seed}-{config_hash(cfg)}"
    try:
        load_meta(path)
        print(f"data: the built-in synthetic Criteo-shaped set in {path}", flush=True)
    except MetaError:
        print(f"data: generating the built-in synthetic Criteo-shaped set once: {cfg.rows:,} rows into {path} "
              f"(about {GENERATION_SECONDS_PER_MROW * cfg.rows / 1e6:.0f} s on 2 CPU cores; reused afterwards)",
              flush=True)
    return str(ensure_default())

