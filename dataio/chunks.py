"""Read a file as chunks of whole lines, and make sure the file does not change between passes.

Preprocessing reads its input twice (count, then encode). Chunks are `chunk_bytes` of whole lines,
so memory is one chunk whatever the file; a single line longer than a chunk is refused (it cannot
be a Criteo or Avazu row). The file's identity (device, inode, size, mtime) is taken before the
first pass and checked before and after the second, and the second pass never reads beyond the
size the first pass saw, so a file replaced, rewritten or still growing is an error, never a
dataset encoded from two different files.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from dataio.errors import PreprocessError


@dataclass(frozen=True)
class FileIdentity:
    """What identifies the bytes of a file without reading them."""
    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> "FileIdentity":
        st = os.stat(path)
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def check_unchanged(self, path: Path, when: str) -> None:
        """Raise PreprocessError if path is no longer this file with these bytes."""
        try:
            now = FileIdentity.of(path)
        except OSError as e:
            raise PreprocessError(f"{path}: input disappeared {when} ({e.strerror}); nothing was written") from e
        if now != self:
            what = [name for name in ("device", "inode", "size", "mtime_ns")
                    if getattr(now, name) != getattr(self, name)]
            raise PreprocessError(f"{path}: input changed {when} ({', '.join(what)} differ: it was replaced "
                                  f"or modified while being read); nothing was written; run again on a file "
                                  f"that does not change")


def iter_line_chunks(path: Path, chunk_bytes: int, hasher=None, skip_lines: int = 0,
                     max_bytes: int | None = None) -> Iterator[tuple[np.ndarray, int, bool]]:
    """Yield (bytes uint8 of whole lines, number of its first line (1-based), is_last) over the file.

    The last chunk may end with a line without newline; the tokenizer flags that as truncated.
    skip_lines leading lines (a header) are not yielded, but are counted in line numbers.
    max_bytes: read at most this many bytes (the size pass 1 saw); bytes beyond it mean the file
    grew, which is an error.
    """
    line = 1
    leftover = b""
    read = 0
    # sha256 runs in a helper thread (hashlib releases the GIL), overlapping the tokenizer.
    pool = ThreadPoolExecutor(1) if hasher is not None else None
    pending = None
    try:
        with open(path, "rb") as f:
            while True:
                want = chunk_bytes if max_bytes is None else min(chunk_bytes, max_bytes - read)
                block = f.read(want) if want > 0 else b""
                read += len(block)
                if pool is not None:
                    if pending is not None:
                        pending.result()
                    pending = pool.submit(hasher.update, block)
                if max_bytes is None:
                    at_eof = f.peek(1) == b""
                else:
                    at_eof = read >= max_bytes
                    if at_eof and f.peek(1) != b"":
                        raise PreprocessError(f"{path}: input grew while being read (past the {max_bytes} "
                                              f"bytes of pass 1); nothing was written; run again on a file "
                                              f"that does not change")
                    if not at_eof and f.peek(1) == b"":
                        raise PreprocessError(f"{path}: input shrank while being read ({read} of {max_bytes} "
                                              f"bytes); nothing was written")
                data = leftover + block
                if at_eof:
                    whole, leftover = data, b""
                else:
                    cut = data.rfind(b"\n") + 1
                    if cut == 0:           # no newline yet: a line longer than a chunk
                        if len(data) > chunk_bytes:
                            raise PreprocessError(f"{path}:{line}: line longer than {chunk_bytes} bytes; "
                                                  f"this is not a Criteo/Avazu row")
                        leftover = data
                        continue
                    whole, leftover = data[:cut], data[cut:]
                while skip_lines and whole:
                    nl = whole.find(b"\n")
                    whole = whole[nl + 1:] if nl >= 0 else b""
                    skip_lines -= 1
                    line += 1
                if whole:
                    yield np.frombuffer(whole, dtype=np.uint8), line, at_eof
                    line += whole.count(b"\n")
                if at_eof:
                    return
    finally:
        # the digest must cover every byte read, also when the caller stops early
        if pool is not None:
            if pending is not None:
                pending.result()
            pool.shutdown()
