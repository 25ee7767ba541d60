"""Hyperparameter scaling rules from a base batch b0 to b = s * b0.

    none     nothing changes
    sqrt     lr and lr_embed times sqrt(s)
    linear   lr and lr_embed times s
    cowclip  lr times sqrt(s), lr_embed unchanged, l2 times s, warm-up on (1 epoch unless given),
             CowClip on (r = 1 unless given)            (the paper's rule, section 4.3)

The base is the reference's Criteo setting at b0 = 1024: lr 8e-4, lr_embed 1e-4, l2 1e-5,
r 1, bound 1e-5 (README of bytedance/LargeBatchCTR). A value given explicitly (on the command
line) always wins over the computed one, which is how the reference's hand-tuned rows (e.g.
Avazu at 128K) are reproduced.
"""
import math

RULES = ("none", "sqrt", "linear", "cowclip")
CRITEO_BASE = {"bs": 1024, "lr": 8e-4, "lr_embed": 1e-4, "l2": 1e-5, "clip": 1.0, "bound": 1e-5,
               "warmup": 0.0}
AVAZU_BASE = {"bs": 1024, "lr": 1e-4, "lr_embed": 1e-4, "l2": 1e-5, "clip": 1.0, "bound": 1e-4, "warmup": 0.0}
# --dataset -> the base hyperparameters its scaling starts from
DATASET_BASES = {"criteo_kaggle": CRITEO_BASE, "criteo": CRITEO_BASE, "synthetic": CRITEO_BASE,
                 "avazu": AVAZU_BASE}


def scale_hyperparameters(rule: str, bs: int, base: dict = CRITEO_BASE, explicit: dict | None = None) -> dict:
    """-> dict with bs, lr, lr_embed, l2, clip, bound, warmup for batch `bs` under `rule`.

    base: the hyperparameters at base["bs"]; explicit: values that override the rule's."""
    if rule not in RULES:
        raise ValueError(f"unknown scaling rule {rule!r}; choose one of {RULES}")
    s = bs / base["bs"]
    hp = dict(base, bs=bs)
    if rule == "sqrt":
        hp["lr"], hp["lr_embed"] = base["lr"] * math.sqrt(s), base["lr_embed"] * math.sqrt(s)
    elif rule == "linear":
        hp["lr"], hp["lr_embed"] = base["lr"] * s, base["lr_embed"] * s
    elif rule == "cowclip":
        hp["lr"] = base["lr"] * math.sqrt(s)
        hp["l2"] = base["l2"] * s
        hp["warmup"] = base["warmup"] or 1.0
        hp["clip"] = base["clip"] or 1.0
    if rule != "cowclip":
        hp["clip"] = 0.0  # the other rules train without CowClip unless --clip says otherwise
    hp.update({k: v for k, v in (explicit or {}).items() if v is not None})
    return hp


def format_hyperparameters(hp: dict) -> str:
    keys = ("bs", "lr", "lr_embed", "l2", "clip", "bound", "warmup")
    return "  ".join(f"{k}={hp[k]:.6g}" for k in keys if k in hp)
