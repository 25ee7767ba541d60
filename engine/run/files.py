"""How a run directory's files are written: by replace, never through a link, so that a copy of a run made
with links (`cp -rs run snap`, `cp -al run snap`) stays a copy when either one is trained on.

    write_replace   a whole file: a new file beside it, fsync, rename over the old name (a reader sees the
                    old bytes or the new, never a mix; a link in the old name's place is replaced, and
                    what it pointed to is left as it was)
    append_line     metrics.jsonl: a file shared with another directory (a symbolic link, or a hard link:
                    more than one name) is first replaced by a private copy, then appended to
    own             the same private copy for any file about to be changed in place (the lock file)

metrics.jsonl is appended to rather than rewritten per line (a long run logs tens of thousands of
lines); a kill mid-line leaves a torn last line that --resume cuts (engine/run/directory.py truncate_metrics).
"""
import json
import os
from pathlib import Path


def write_replace(path, data: str | bytes) -> None:
    """Write `data` as the whole of `path` by replace: a new file in the same directory, fsync, rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def is_shared(path) -> bool:
    """Whether writing into `path` in place would change a file another name also shows: a symbolic link,
    or a file with more than one hard link."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return False
    return os.path.islink(path) or status.st_nlink > 1


def own(path) -> bool:
    """Make `path` a file of this directory alone (a private copy of what it shows), if it is shared.
    -> whether a copy was made."""
    if not is_shared(path):
        return False
    write_replace(path, Path(path).read_bytes())
    return True


def append_line(path, line: str) -> None:
    """Append one line (a newline is added) to `path`, after making it private if it is shared."""
    own(path)
    with open(path, "a") as f:
        f.write(line + "\n")


def fsync_file(path) -> None:
    """Flush `path`'s bytes to disk (metrics.jsonl before a checkpoint that counts its lines)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def read_json_object(path, error: type = ValueError) -> dict:
    """A file that must hold one JSON object; anything else raises `error` naming the file."""
    try:
        value = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as problem:
        raise error(f"{path}: not valid JSON ({problem})") from None
    if not isinstance(value, dict):
        raise error(f"{path}: must be a JSON object, not {type(value).__name__}")
    return value
