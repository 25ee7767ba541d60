"""A run directory's protections: who may write into it, which dataset it was trained on, and its log.

    claim_run_dir     an existing run directory is never replaced without --overwrite, and --resume
                      needs one; --overwrite removes only the files a run writes
    locked            an exclusive flock on <run>/.lock while a process trains into the directory
    data_fingerprint  sha256 of the dataset's meta.json bytes (its schema, split sizes, the source
                      file's checksum): recorded in config.json, checked on resume and by evaluate
    truncate_metrics  metrics.jsonl cut back to the lines its checkpoint counted, so a resumed run
                      logs nothing twice and redoes every record that came after the checkpoint
Every file here is written by replace, never through a link (engine/run/files.py).
"""
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path

from engine.run.files import own, write_replace

# what engine.train writes into a run directory; --overwrite removes these and nothing else
RUN_FILES = ("config.json", "metrics.jsonl", "final_metrics.json", "early_stop.json", "profile.txt")
CHECKPOINT_DIRS = ("checkpoint", "checkpoint.tmp", "checkpoint.old", "best")
LOCK_NAME = ".lock"


class RunDirError(ValueError):
    """The run directory cannot be used as asked; the message says why and what to do."""


def claim_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Check that training may write into `out` (before anything is written), and print it.

    A fresh run needs `out` absent or empty; an existing run directory is replaced only with
    --overwrite, and a folder that is not a run directory is never touched."""
    print(f"run directory: {out}", flush=True)
    if resume:
        if overwrite:
            raise RunDirError("--resume continues the run in --out and --overwrite replaces it: give one")
        if not (out / "config.json").is_file():
            raise RunDirError(f"{out}: not a run directory (no config.json), nothing to resume")
        return
    if not out.exists():
        return
    if not out.is_dir():
        raise RunDirError(f"--out {out}: exists and is not a directory")
    entries = [p.name for p in out.iterdir() if p.name != LOCK_NAME]
    if not entries:
        return
    if not is_run_dir(out):
        raise RunDirError(f"--out {out}: an existing folder that is not a run directory (holds "
                          f"{', '.join(sorted(entries)[:3])}{', ...' if len(entries) > 3 else ''}); "
                          f"choose another --out")
    if not overwrite:
        raise RunDirError(f"--out {out}: holds a run already; pass --resume to continue it or --overwrite "
                          f"to replace it")


def is_run_dir(path: Path) -> bool:
    return (path / "config.json").is_file() or any((path / d).is_dir() for d in CHECKPOINT_DIRS)


def clear_run_files(out: Path) -> None:
    """--overwrite: remove what an earlier run wrote (RUN_FILES, the checkpoints), nothing else."""
    for name in RUN_FILES:
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
    for name in CHECKPOINT_DIRS:
        path = out / name
        if path.is_symlink():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)


@contextlib.contextmanager
def locked(out: Path):
    """Hold an exclusive lock on `out` while the body runs; a second trainer gets a one-line error.

    flock is released by the kernel when the process dies, so a killed run never leaves a stale lock
    (the .lock file stays, empty of meaning, and is reused)."""
    out.mkdir(parents=True, exist_ok=True)
    own(out / LOCK_NAME)   # a lock file shared with a linked copy of the run would lock both, and get our pid
    with open(out / LOCK_NAME, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise RunDirError(f"{out}: another engine.train is running in this directory (pid {holder}); "
                              f"wait for it or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def refuse_links(out: Path) -> None:
    """A checkpoint is replaced by renaming directories, which replaces a symbolic link rather than
    writing where it points (and the second save then fails). So links there are refused up front."""
    for name in CHECKPOINT_DIRS:
        if (out / name).is_symlink():
            raise RunDirError(f"{out / name}: is a symbolic link (to {os.readlink(out / name)}); checkpoints "
                              f"are swapped by rename, which would replace the link: move the checkpoint into "
                              f"{out} or point --out at the directory the link leads to")


def data_fingerprint(data_dir) -> str:
    """sha256 of the dataset's meta.json: it names every split's rows and shards, the vocabulary sizes
    and the source file's checksum, so re-preprocessing other data changes it."""
    return "sha256:" + hashlib.sha256((Path(data_dir) / "meta.json").read_bytes()).hexdigest()


def truncate_metrics(path: Path, step: int, records: int | None = None) -> int:
    """Cut metrics.jsonl back to what its checkpoint covered: the first `records` lines when the checkpoint
    counted them, else (an older checkpoint) the records up to global step `step`; a torn last line goes
    too. Written by replace. -> number of lines dropped."""
    if not path.exists():
        return 0
    kept, dropped = [], 0
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as error:
        raise RunDirError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); the run's log is "
                          f"damaged: restore it or move it aside to resume") from None
    for index, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if not is_metrics_record(record):
            raise RunDirError(f"{path}, line {index + 1}: not a metrics record ({line[:40]}): an object with an "
                              f"integer \"step\" is expected; fix or remove the line to resume (nothing was changed)")
        covered = index < records if records is not None else record.get("step", 0) <= step
        if covered:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        write_replace(path, "".join(line + "\n" for line in kept))
    return dropped


def is_metrics_record(record) -> bool:
    """A metrics.jsonl line as engine.train writes it: an object whose "step", when present, is an integer."""
    step = record.get("step", 0) if isinstance(record, dict) else None
    return isinstance(step, int) and not isinstance(step, bool)


def check_fingerprint(out: Path, data, fingerprint: str) -> None:
    """On resume: the dataset must be the one the run was trained on (when the run recorded it)."""
    try:
        recorded = json.loads((out / "config.json").read_text()).get("data_fingerprint")
    except (OSError, json.JSONDecodeError):
        return  # engine.run.config reads config.json first and names its problem
    if recorded is not None and recorded != fingerprint:
        raise RunDirError(f"{data}: the dataset changed since {out} was trained on it (meta.json fingerprint "
                          f"{fingerprint[:19]}..., the run recorded {recorded[:19]}...); resuming would train on "
                          f"other data. Restore the dataset, or start a new run with another --out")
