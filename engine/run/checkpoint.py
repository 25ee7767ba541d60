"""Checkpoints: model parameters, Adam state, the position in the data and the RNG, written so
that a crash never leaves a half-written checkpoint behind, and never a non-finite one.

Layout of `<run>/checkpoint/`:
    arrays.npz   params (`param/<name>`), Adam moments (`m/<name>`, `v/<name>`), uncompressed
    state.json   {"format_version", "epoch", "step_in_epoch", "global_step", "updates", "rng", "run"}
                 "run" (engine/run/phases.py): what the run had recorded when the checkpoint was taken (its
                 metrics.jsonl lines, early-stopping state, last evaluation), so that a resumed run
                 redoes exactly what came after
A new checkpoint is written to `checkpoint.tmp/` and swapped in by two renames:
checkpoint -> checkpoint.old, checkpoint.tmp -> checkpoint. A process killed in between leaves a
complete checkpoint.tmp and a checkpoint.old; a full disk leaves a partial checkpoint.tmp.
`recover_checkpoint` puts either state right on the next start.
"""
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

from engine.optim import AdamState
from engine.run.files import read_json_object

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that must not be written or used; the message names it and why."""


def save_checkpoint(run_dir: Path, params: dict, state: AdamState, position: dict, rng_state, to_host,
                    run_state: dict | None = None, name: str = "checkpoint") -> Path:
    """Write `run_dir`/`name` (default checkpoint/) by the swap described above. -> its path."""
    final = Path(run_dir) / name
    tmp = Path(run_dir) / f"{name}.tmp"
    old = Path(run_dir) / f"{name}.old"
    arrays = {f"param/{k}": to_host(v) for k, v in params.items()}
    arrays.update({f"m/{k}": to_host(v) for k, v in state.m.items()})
    arrays.update({f"v/{k}": to_host(v) for k, v in state.v.items()})
    bad = non_finite_arrays(arrays)
    if bad:  # the training loop stops before this; kept so no caller can write a poisoned checkpoint
        raise CheckpointError(f"{final}: not written, {len(bad)} array(s) hold inf or nan ({', '.join(bad[:4])})")
    for path in (final, tmp, old):
        if path.is_symlink():
            raise CheckpointError(f"{path}: is a symbolic link; the checkpoint swap would replace it")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with open(tmp / "arrays.npz", "wb") as f:
        np.savez(f, **arrays)
    info = {"format_version": FORMAT_VERSION, "updates": state.updates, "rng": rng_state, **position}
    if run_state is not None:
        info["run"] = run_state
    (tmp / "state.json").write_text(json.dumps(info))
    for path in (tmp / "arrays.npz", tmp / "state.json"):
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def non_finite_arrays(arrays: dict) -> list:
    """Names of the host arrays that hold an inf or a nan."""
    return [name for name, a in arrays.items() if a.dtype.kind == "f" and not np.isfinite(a).all()]


def is_complete(path: Path) -> bool:
    """Whether `path` holds a whole checkpoint: state.json parses and arrays.npz is a readable zip
    (state.json is written after arrays.npz is closed, and a cut zip has no central directory)."""
    try:
        json.loads((path / "state.json").read_text())
        with zipfile.ZipFile(path / "arrays.npz") as archive:
            return bool(archive.namelist())
    except (OSError, ValueError, zipfile.BadZipFile):
        return False


def global_step_of(path: Path) -> int | None:
    """The global step of the whole checkpoint in `path`, or None if it is absent or incomplete."""
    if not is_complete(path):
        return None
    step = json.loads((Path(path) / "state.json").read_text()).get("global_step")
    return step if isinstance(step, int) else None


def recover_checkpoint(run_dir: Path) -> str | None:
    """Finish or undo a checkpoint swap that was cut off. -> what was done, or None if nothing was needed.

    no checkpoint, complete checkpoint.tmp   the kill came between the two renames: finish the swap
    no checkpoint, checkpoint.old            the new one is partial: the old one is the last good one
    checkpoint present                       a leftover checkpoint.tmp / .old is partial or stale: removed
    """
    run_dir = Path(run_dir)
    final, tmp, old = run_dir / "checkpoint", run_dir / "checkpoint.tmp", run_dir / "checkpoint.old"
    if any(p.is_symlink() for p in (final, tmp, old)):
        return None  # refused by engine.run.directory.refuse_links; never rename or delete through a link
    done = None
    if not final.exists():
        if tmp.is_dir() and is_complete(tmp):
            tmp.rename(final)
            done = f"finished an interrupted checkpoint swap ({tmp.name} -> {final.name})"
        elif old.is_dir() and is_complete(old):
            old.rename(final)
            done = f"restored {final.name} from {old.name} (the newer checkpoint was never completed)"
    for leftover in (tmp, old):
        if leftover.is_dir():
            shutil.rmtree(leftover)
            done = done or f"removed a partial {leftover.name}"
    return done


def load_checkpoint(run_dir: Path, asarray, expected_shapes: dict | None = None, require_finite: bool = True):
    """-> (params, AdamState, info dict). `asarray` moves host arrays to the backend.

    expected_shapes: name -> shape of every parameter of the model it is loaded into; a checkpoint
    with other names or shapes (another model or data set) is refused, as is one holding inf or nan."""
    path = Path(run_dir) / "checkpoint"
    if not (path / "state.json").exists():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from (was the run started with this --out?)")
    info = read_state(path)
    declared = declared_arrays(path / "arrays.npz")      # before any array is allocated
    if expected_shapes is not None:
        check_shapes(path, declared, expected_shapes)
    host = {"param": {}, "m": {}, "v": {}}
    with np.load(path / "arrays.npz") as arrays:
        for key in arrays.files:
            kind, name = key.split("/", 1)
            host[kind][name] = arrays[key]
    if require_finite:
        bad = non_finite_arrays({f"{kind}/{name}": a for kind, part in host.items() for name, a in part.items()})
        if bad:
            raise CheckpointError(f"{path}: {len(bad)} array(s) hold inf or nan ({', '.join(bad[:4])}); "
                                  f"the run diverged before this checkpoint and it cannot be used")
    params, m, v = ({name: asarray(a) for name, a in host[kind].items()} for kind in ("param", "m", "v"))
    return params, AdamState(m, v, info["updates"]), info


STATE_COUNTERS = ("epoch", "step_in_epoch", "global_step", "updates")


def read_state(path: Path) -> dict:
    """checkpoint/state.json, every field the loop reads checked for its type (file and key named)."""
    where = path / "state.json"
    info = read_json_object(where, CheckpointError)
    if info.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {info.get('format_version')!r}, expected {FORMAT_VERSION}")
    for key in STATE_COUNTERS:
        if key not in info and key != "updates":   # a checkpoint of the reproducibility check has no position
            continue
        value = info.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CheckpointError(f"{where}: {key} must be an integer >= 0, not {json.dumps(value)}")
    if info.get("rng") is not None and not isinstance(info["rng"], dict):
        raise CheckpointError(f"{where}: rng must be an object (numpy's generator state), not "
                              f"{json.dumps(info.get('rng'))[:40]}")
    return info


class _Declared:
    """An array as its .npy header declares it (shape, dtype), before it is read."""

    def __init__(self, shape: tuple, dtype):
        self.shape, self.dtype = shape, dtype


def declared_arrays(npz: Path) -> dict:
    """{"param" | "m" | "v": {name: _Declared}} from the .npy headers of arrays.npz; refuses a header
    declaring more bytes than the archive holds for it (a damaged or crafted file would otherwise make
    np.load allocate what it declares, e.g. 112 GiB for (3e9, 10) float32)."""
    declared = {"param": {}, "m": {}, "v": {}}
    try:
        with zipfile.ZipFile(npz) as archive:
            for member in archive.infolist():
                with archive.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(f)
                key = member.filename.removesuffix(".npy")
                kind, _, name = key.partition("/")
                if kind not in declared or not name or dtype.hasobject:
                    raise CheckpointError(f"{npz}: unexpected member {member.filename!r}")
                nbytes = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
                if nbytes > member.file_size:
                    raise CheckpointError(f"{npz}: {key} declares shape {tuple(shape)} ({nbytes:,} bytes) but the "
                                          f"archive holds {member.file_size:,} bytes for it: the file is damaged")
                declared[kind][name] = _Declared(tuple(shape), dtype)
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{npz}: not a readable checkpoint archive ({error})") from None
    return declared


def check_shapes(path: Path, host: dict, expected: dict) -> None:
    """Every part (params, m, v) must hold exactly the model's parameter names, each of its shape."""
    for kind, part in host.items():
        missing, extra = sorted(set(expected) - set(part)), sorted(set(part) - set(expected))
        if missing or extra:
            raise CheckpointError(f"{path}: does not match the model: {kind} arrays missing {missing[:3]}, "
                                  f"unexpected {extra[:3]} (a checkpoint of another model?)")
        for name, shape in expected.items():
            if tuple(part[name].shape) != tuple(shape):
                raise CheckpointError(f"{path}: {kind}/{name} has shape {tuple(part[name].shape)}, the model "
                                      f"needs {tuple(shape)} (another model, embedding size or data set?)")
