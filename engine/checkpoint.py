"""Checkpoints: model parameters, Adam state, the position in the data and the RNG, written so
that a crash never leaves a half-written checkpoint behind.

Layout of `<run>/checkpoint/`:
    arrays.npz   params (`param/<name>`), Adam moments (`m/<name>`, `v/<name>`), uncompressed
    state.json   {"format_version", "epoch", "step_in_epoch", "global_step", "updates", "rng"}
A new checkpoint is written to `checkpoint.tmp/` and then renamed over the old one, so readers
see either the previous checkpoint or the new one, never a mix.
"""
import json
import os
import shutil
from pathlib import Path

import numpy as np

from engine.optim import AdamState

FORMAT_VERSION = 1


def save_checkpoint(run_dir: Path, params: dict, state: AdamState, position: dict, rng_state, to_host) -> Path:
    final = Path(run_dir) / "checkpoint"
    tmp = Path(run_dir) / "checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    arrays = {f"param/{k}": to_host(v) for k, v in params.items()}
    arrays.update({f"m/{k}": to_host(v) for k, v in state.m.items()})
    arrays.update({f"v/{k}": to_host(v) for k, v in state.v.items()})
    with open(tmp / "arrays.npz", "wb") as f:
        np.savez(f, **arrays)
    info = {"format_version": FORMAT_VERSION, "updates": state.updates, "rng": rng_state, **position}
    (tmp / "state.json").write_text(json.dumps(info))
    for path in (tmp / "arrays.npz", tmp / "state.json"):
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    old = Path(run_dir) / "checkpoint.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(run_dir: Path, asarray):
    """-> (params, AdamState, info dict). `asarray` moves host arrays to the backend."""
    path = Path(run_dir) / "checkpoint"
    if not (path / "state.json").exists():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from (was the run started with this --out?)")
    info = json.loads((path / "state.json").read_text())
    if info.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {info.get('format_version')}, expected {FORMAT_VERSION}")
    params, m, v = {}, {}, {}
    with np.load(path / "arrays.npz") as arrays:
        for key in arrays.files:
            kind, name = key.split("/", 1)
            {"param": params, "m": m, "v": v}[kind][name] = asarray(arrays[key])
    return params, AdamState(m, v, info["updates"]), info
