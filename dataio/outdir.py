"""Where a dataset may be written: what an existing `--out` may be, links, and leftovers.

Rules (the README's "What is protected" lists them for users):
  * `--out` may be new, an empty directory, or a dataset directory written by this tool (meta.json
    from dataio plus only the files dataio writes); that dataset is replaced atomically. Anything
    else that exists is refused and left untouched: a user's folder, a file, the current directory.
  * `--out` must not contain an input (the input would vanish with the old directory).
  * A symlink `--out` is followed when it points to an empty directory or to such a dataset (the
    target is replaced, the link stays as it is); a dangling link or one to anything else is refused.
  * The dataset is built in `.<name>.tmp-<pid>` beside the target. SIGTERM and Ctrl-C remove it
    (`cleanup_on_terminate`); one left by a process that died without cleaning (kill -9, power
    loss) is removed by the next writer of the same target, once its pid is no longer running.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
from pathlib import Path

from dataio.errors import PreprocessError

_OWN_FILE = re.compile(r"^(meta\.json|meta\.json\.tmp|vocab\.npz|[a-z]+-\d{5}\.h5)$")
_HOW = "choose another --out, or remove it yourself if it is meant to go"


def is_own_dataset(path: Path) -> bool:
    """True if path is a directory holding a meta.json written by dataio and only dataio's files."""
    meta = path / "meta.json"
    try:
        names = os.listdir(path)
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(data, dict) and "format_version" in data and "kind" in data
            and all(_OWN_FILE.match(n) for n in names))


def check_out_dir(out: str | os.PathLike, inputs: tuple = (), option: str = "--out", what: str = "the input"
                  ) -> Path:
    """The real path to write the dataset `out` to, or PreprocessError saying why not (nothing touched).

    inputs: files that must not lie inside it (`what` names them in the message).
    """
    given = Path(out)
    if given.is_symlink():
        target = given.resolve()
        if not (target.is_dir() and (is_own_dataset(target) or not os.listdir(target))):
            raise PreprocessError(f"{option} {given}: a symlink to {target}, which is not an empty directory or "
                                  f"a dataset written by this tool; links are followed only to those; {_HOW}")
    real = given.resolve()
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise PreprocessError(f"{option} {given}: is the current directory or contains it; {_HOW}")
    for item in inputs:
        if item is None:
            continue
        item = Path(item).resolve()
        if item == real or real in item.parents:
            raise PreprocessError(f"{option} {given}: contains {what} {item}, which replacing it would "
                                  f"delete; choose an --out outside it")
    if real.exists() or real.is_symlink():
        if not real.is_dir():
            raise PreprocessError(f"{option} {given}: exists and is not a directory; {_HOW}")
        if os.listdir(real) and not is_own_dataset(real):
            foreign = sorted(n for n in os.listdir(real) if not _OWN_FILE.match(n))[:3]
            detail = f"it holds {', '.join(foreign)}" if foreign else "its meta.json is not dataio's"
            raise PreprocessError(f"{option} {given}: exists and is not a dataset written by this tool "
                                  f"({detail}); nothing was changed; {_HOW}")
        if not writable(real):
            raise PreprocessError(f"{option} {given}: not writable, so the old dataset cannot be replaced")
    ancestor = real.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not writable(ancestor):
        raise PreprocessError(f"{option} {given}: cannot create it, {ancestor} is not a writable directory")
    return real


def writable(path: Path) -> bool:
    """May this process create and remove entries in directory path? (False on a read-only file system.)"""
    return os.access(path, os.W_OK | os.X_OK)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:     # someone else's live process
        return True
    return True


def remove_stale_temps(real: Path) -> list[Path]:
    """Remove `.<name>.tmp-<pid>` / `.<name>.old-<pid>` beside real whose pid is not running; -> removed."""
    pattern = re.compile(rf"^\.{re.escape(real.name)}\.(tmp|old)-(\d+)$")
    removed = []
    try:
        names = os.listdir(real.parent)
    except OSError:
        return removed
    for name in names:
        m = pattern.match(name)
        if m and int(m.group(2)) != os.getpid() and not pid_alive(int(m.group(2))):
            shutil.rmtree(real.parent / name, ignore_errors=True)
            removed.append(real.parent / name)
    return removed


class Terminated(SystemExit):
    """SIGTERM arrived: unwinds like Ctrl-C so writers remove their temporary directories."""


@contextlib.contextmanager
def cleanup_on_terminate():
    """Within this block SIGTERM raises Terminated (exit status 143) in the main thread, so every
    `with DatasetWriter(...)` on the stack aborts and removes its temporary directory."""
    def on_term(signum, frame):
        raise Terminated(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:          # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
