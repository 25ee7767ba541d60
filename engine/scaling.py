"""Hyperparameter scaling rules from a base batch b0 to b = s * b0, and the reference's defaults.

    none     nothing changes
    sqrt     lr and lr_embed times sqrt(s)
    linear   lr and lr_embed times s
    cowclip  lr times sqrt(s), lr_embed unchanged, l2 times s, warm-up on (1 epoch unless given),
             CowClip on (r = 1 unless given)            (the paper's rule, section 4.3)
    auto     (the command line's default) `baseline` when b = b0, `cowclip` from the dataset's base
             otherwise
    baseline the reference train.py's defaults (REFERENCE_DEFAULTS), its baseline run: reached
             through `auto` only, not a command-line choice

The bases are the reference's settings at b0 = 1024 (README of bytedance/LargeBatchCTR):
Criteo lr 8e-4, lr_embed 1e-4, l2 1e-5, r 1, bound 1e-5; Avazu lr 1e-4, lr_embed 1e-4, l2 1e-5,
r 1, bound 1e-3 at 1K and 2K and 1e-4 from 4K (`bound_from`), and at 128K the reference's
hand-tuned row lr 16e-4, l2 96e-5 (`tuned`) where the rule would give 11.31e-4 and 128e-5.
A value given explicitly (on the command line) always wins over the computed one.
"""
import math

SCALE_RULES = ("none", "sqrt", "linear", "cowclip")
BASELINE = "baseline"
CLI_SCALE_RULES = ("auto",) + SCALE_RULES
# bytedance/LargeBatchCTR train.py's argparse defaults: what its baseline command trains
REFERENCE_DEFAULTS = {"bs": 1024, "lr": 1e-4, "lr_embed": 1e-4, "l2": 1e-5, "clip": 0.0, "bound": 0.0,
                      "warmup": 0.0, "init_stddev": 1e-4, "epoch": 10, "sparse_embed_dim": 10, "dropout": 0.0,
                      "seed": 1235, "split": "rand", "dataset": "criteo_kaggle", "model": "DeepFM",
                      "opt": "adam", "log_freq": 100}
HP_KEYS = ("bs", "lr", "lr_embed", "l2", "clip", "bound", "warmup")

CRITEO_BASE = {"bs": 1024, "lr": 8e-4, "lr_embed": 1e-4, "l2": 1e-5, "clip": 1.0, "bound": 1e-5,
               "warmup": 0.0}
AVAZU_BASE = {"bs": 1024, "lr": 1e-4, "lr_embed": 1e-4, "l2": 1e-5, "clip": 1.0, "bound": 1e-3, "warmup": 0.0,
              # the reference's Avazu table: zeta 1e-3 at 1K and 2K, 1e-4 from 4K on
              "bound_from": {4096: 1e-4},
              # ... and its 128K row, tuned by hand (the sqrt rule would give lr 11.31e-4, l2 128e-5)
              "tuned": {131072: {"lr": 16e-4, "l2": 96e-5}}}
# --dataset -> the base hyperparameters its scaling starts from
DATASET_BASES = {"criteo_kaggle": CRITEO_BASE, "criteo": CRITEO_BASE, "synthetic": CRITEO_BASE,
                 "avazu": AVAZU_BASE}


def scale_hyperparameters(rule: str, bs: int, base: dict = CRITEO_BASE, explicit: dict | None = None) -> dict:
    """-> dict with bs, lr, lr_embed, l2, clip, bound, warmup for batch `bs` under `rule`.

    base: the hyperparameters at base["bs"] (optionally bound_from {batch: bound} and tuned
    {batch: {key: value}}, used by `cowclip`); explicit: values that override the rule's."""
    if rule not in CLI_SCALE_RULES:
        raise ValueError(f"unknown scaling rule {rule!r}; choose one of {CLI_SCALE_RULES}")
    if rule == "auto":
        rule = resolve_auto(bs, base["bs"])
    s = bs / base["bs"]
    hp = {k: base[k] for k in HP_KEYS if k != "bs"}
    hp["bs"] = bs
    if rule == BASELINE:
        hp.update({k: REFERENCE_DEFAULTS[k] for k in HP_KEYS if k != "bs"})
    elif rule == "sqrt":
        hp["lr"], hp["lr_embed"] = base["lr"] * math.sqrt(s), base["lr_embed"] * math.sqrt(s)
    elif rule == "linear":
        hp["lr"], hp["lr_embed"] = base["lr"] * s, base["lr_embed"] * s
    elif rule == "cowclip":
        hp["lr"] = base["lr"] * math.sqrt(s)
        hp["l2"] = base["l2"] * s
        hp["warmup"] = base["warmup"] or 1.0
        hp["clip"] = base["clip"] or 1.0
        for threshold, bound in sorted(base.get("bound_from", {}).items()):
            if bs >= threshold:
                hp["bound"] = bound
        hp.update(base.get("tuned", {}).get(bs, {}))
    if rule not in ("cowclip", BASELINE):
        hp["clip"] = 0.0  # the other rules train without CowClip unless --clip says otherwise
    hp.update({k: v for k, v in (explicit or {}).items() if v is not None})
    return hp


def resolve_auto(bs: int, base_bs: int) -> str:
    """`auto` -> "baseline" (the reference's train.py defaults) at the base batch, else "cowclip"."""
    return BASELINE if bs == base_bs else "cowclip"


def default_init_stddev(rule: str) -> float:
    """The reference's CowClip commands use --init_stddev 1e-2; its train.py defaults to 1e-4."""
    return 1e-2 if rule == "cowclip" else REFERENCE_DEFAULTS["init_stddev"]


def format_hyperparameters(hp: dict) -> str:
    return "  ".join(f"{k}={hp[k]:.6g}" for k in HP_KEYS if k in hp)
