"""Avazu's train file: its columns, and chunks of its bytes -> arrays (pure Python, lossless).

Symbols: n good rows of a chunk, F = 22 sparse fields.

A CSV with a header line naming at least id, click and the 22 fields below. Values are kept as the
raw bytes between commas (no decoding), so two different byte strings are always two values, UTF-8
or not. A column is an object array of bytes, whose memory grows with the values it holds, not
with the longest value of the column; a value longer than MAX_VALUE_BYTES is a bad line.
Missing values become b"-1", the reference's fillna("-1").
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dataio import tokenize as tk
from dataio.errors import ErrorLog, PreprocessError

AVAZU_SPARSE = ["hour", "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id", "app_domain",
                "app_category", "device_id", "device_ip", "device_model", "device_type", "device_conn_type",
                "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21"]
MAX_VALUE_BYTES = 1024   # Avazu's longest values are 8-hex-digit hashes and 8-digit hours
FORMAT_HINT = "an Avazu line is comma-separated, with the columns named in the header line"
MISSING = b"-1"


class AvazuTokenizer:
    header_lines = 1

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as f:
            first = f.readline(1 << 16)
        header = first.rstrip(b"\r\n").decode("ascii", "replace").split(",")
        if header == [""]:
            raise PreprocessError(f"{path}: empty file")
        need = ["id", "click"] + AVAZU_SPARSE
        missing = [c for c in need if c not in header]
        if missing:
            raise PreprocessError(f"{path}:1: header lacks column(s) {missing}; is this Avazu's train file? "
                                  f"({FORMAT_HINT})")
        self.header = header
        self.label_at = header.index("click")
        self.sparse_at = [header.index(c) for c in AVAZU_SPARSE]
        self.columns = AVAZU_SPARSE

    def _check(self, parts: list[bytes]):
        """(message, column, is a shape error) of a bad line, or None."""
        if len(parts) != len(self.header):
            return "wrong number of columns", f"#{len(parts)} (want {len(self.header)})", True
        if parts[-1].endswith(b"\r"):
            return "line ends with CR (a CR LF line end)", self.header[-1], True
        if parts[self.label_at] not in (b"0", b"1"):
            return "label is not 0 or 1", "click", True
        for j in self.sparse_at:
            if len(parts[j]) > MAX_VALUE_BYTES:
                return f"value longer than {MAX_VALUE_BYTES} bytes", self.header[j], False
        return None

    def __call__(self, buf: np.ndarray, first_line: int, at_eof: bool, errors: ErrorLog | None):
        """-> label (n,) int8, dense (n, 0), sparse [F] of (n,) object arrays of bytes."""
        lines = buf.tobytes().split(b"\n")
        truncated = lines[-1] != b""
        if not truncated:
            lines.pop()
        good = []
        for i, text in enumerate(lines):
            parts = text.split(b",")
            bad = self._check(parts)
            if bad is None and truncated and at_eof and i == len(lines) - 1:
                bad = (tk.ERROR_TEXT[tk.ERR_TRUNCATED], self.header[-1], False)
            if bad is None:
                good.append(parts)
            elif errors is not None:
                errors.add(first_line + i, bad[0], bad[1], format_error=bad[2])
        label = np.array([p[self.label_at] == b"1" for p in good], dtype=np.int8)
        sparse = []
        for j in self.sparse_at:
            col = np.empty(len(good), dtype=object)
            col[:] = [p[j] or MISSING for p in good]
            sparse.append(col)
        return label, np.empty((len(good), 0)), sparse
