"""Criteo's train.txt: its columns, and chunks of its bytes -> arrays (through the Numba tokenizer).

Symbols: n good rows of a chunk, D = 13 dense, F = 26 sparse.

A line is 40 tab-separated fields: label 0/1, I1..I13 (integers, may be empty), C1..C26 (8 lowercase
hex digits, may be empty); no header. See tokenize.py for exactly what is accepted.

DeepCTR's examples (criteo_sample.csv) hold the same rows comma-separated under a header line
`label,I1,..,I13,C1,..,C26`: criteo_tokenizer sees that header and reads the file with
CriteoCsvTokenizer, which skips the header and hands the Numba tokenizer each chunk with its commas
turned into tabs (no Criteo value contains a comma or a tab), so both layouts give the same rows.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from dataio import tokenize as tk
from dataio.errors import ErrorLog, PreprocessError

CRITEO_DENSE = [f"I{i}" for i in range(1, 14)]
CRITEO_SPARSE = [f"C{i}" for i in range(1, 27)]
FORMAT_HINT = ("a Criteo train.txt line is 40 tab-separated fields (label 0/1, I1..I13, C1..C26) "
               "with no header line, or DeepCTR's CSV: the same 40 fields comma-separated under the header "
               "label,I1..I13,C1..C26")
CSV_HEADER = b",".join([b"label"] + [c.encode() for c in CRITEO_DENSE + CRITEO_SPARSE])
_SHAPE_ERRORS = (tk.ERR_COLUMNS, tk.ERR_LABEL)
_MIN_LINE_BYTES = tk.NUM_COLUMNS       # 39 tabs and a newline: no good row is shorter
_KEEP_ERRORS = 16                     # bad lines whose numbers one tokenizer call keeps


class _CriteoPart:
    """Parses one run of whole lines into buffers it reuses across chunks."""

    def __init__(self):
        self.capacity = 0
        self.err = (np.empty(_KEEP_ERRORS, np.int64), np.empty(_KEEP_ERRORS, np.int32),
                    np.empty(_KEEP_ERRORS, np.int32))

    def _buffers(self, n: int):
        # Reused across chunks: fresh 50 MB arrays per chunk cost more in page faults than parsing.
        if n > self.capacity:
            self.capacity = n
            self.out = (np.empty(n, dtype=np.int8), np.empty((n, tk.NUM_DENSE), dtype=np.float64),
                        np.empty((n, tk.NUM_SPARSE), dtype=np.int64))
        return self.out

    def __call__(self, buf: np.ndarray, first_line: int, at_eof: bool, stop_at_first: bool):
        """-> (label, dense, codes, err_counts (codes,), [(line, code, column)] of the first bad lines).

        Views valid until the next call. Row buffers hold at most min(lines, bytes / 40) rows: a file
        of blank lines costs no more than one of real rows.
        """
        lines = int(np.count_nonzero(buf == 10)) + int(len(buf) > 0 and buf[-1] != 10)
        label, dense, codes = self._buffers(min(lines, len(buf) // _MIN_LINE_BYTES + 1))
        err_line, err_code, err_col = self.err
        counts = np.zeros(tk.NUM_ERROR_CODES, dtype=np.int64)
        rows, n_err, seen = tk.parse_criteo(buf, first_line, at_eof, label, dense, codes, err_line, err_code,
                                            err_col, counts, stop_at_first)
        if seen != lines and not (stop_at_first and n_err):
            raise RuntimeError(f"Criteo tokenizer read {seen} of {lines} lines")  # a bug, never a user error
        kept = [(int(err_line[i]), int(err_code[i]), int(err_col[i])) for i in range(min(n_err, _KEEP_ERRORS))]
        return label[:rows], dense[:rows], codes[:rows], counts, kept


class CriteoTokenizer:
    """Criteo chunk -> arrays. A chunk is cut at a newline near its middle and the two halves are
    parsed by two threads (the Numba tokenizer releases the GIL), then joined in order."""
    columns = CRITEO_DENSE + CRITEO_SPARSE
    header_lines = 0
    split_bytes = 1 << 20  # smaller chunks are parsed by one thread

    def __init__(self, path: Path):
        self.path = path
        self.parts = (_CriteoPart(), _CriteoPart())
        self.pool = ThreadPoolExecutor(2)

    def __call__(self, buf: np.ndarray, first_line: int, at_eof: bool, errors: ErrorLog | None):
        """-> label (n,) int8, dense (n, D) float64, sparse [F] of (n,) int64 codes.

        Views into reused buffers (or fresh joined arrays): valid until the next call. Bad lines go
        to `errors` (fail mode raises at the first); errors=None in pass 2, which meets only the
        lines pass 1 already judged.
        """
        middle = len(buf) // 2
        newline = np.flatnonzero(buf[middle:] == 10)
        if len(buf) < self.split_bytes or len(newline) < 2:  # small chunk: one thread
            jobs = [(buf, first_line, at_eof)]
        else:
            cut = middle + int(newline[0]) + 1            # the first half ends with its newline
            head = buf[:cut]
            jobs = [(head, first_line, False),
                    (buf[cut:], first_line + int(np.count_nonzero(head == 10)), at_eof)]
        stop = errors is not None and errors.stop_at_first
        results = list(self.pool.map(lambda part, job: part(*job, stop), self.parts, jobs))
        if errors is not None:
            self._report(results, errors)
        if len(results) == 1:
            label, dense, codes = results[0][:3]
        else:
            label, dense, codes = (np.concatenate([r[i] for r in results]) for i in range(3))
        return label, dense, [codes[:, f] for f in range(tk.NUM_SPARSE)]

    @staticmethod
    def _report(results, errors: ErrorLog) -> None:
        """Kept bad lines one by one (in file order), the rest of the counts by kind."""
        for _, _, _, counts, kept in results:
            counts = counts.copy()
            for line, code, column in kept:
                errors.add(line, tk.ERROR_TEXT[code], tk.column_name(column), format_error=code in _SHAPE_ERRORS)
                counts[code] -= 1
            for code in np.flatnonzero(counts):
                errors.add_uncounted(tk.ERROR_TEXT[int(code)], int(counts[code]))


class CriteoCsvTokenizer(CriteoTokenizer):
    """DeepCTR's criteo_sample.csv layout: the header line, then Criteo's fields separated by commas."""
    header_lines = 1

    def __call__(self, buf: np.ndarray, first_line: int, at_eof: bool, errors: ErrorLog | None):
        tabs = np.flatnonzero(buf == 9)
        if len(tabs):   # a tab in a comma-separated file would silently become a field separator
            line = first_line + int(np.count_nonzero(buf[:tabs[0]] == 10))
            raise PreprocessError(f"{self.path}:{line}: a tab in a comma-separated Criteo file ({FORMAT_HINT})")
        return super().__call__(np.where(buf == 44, np.uint8(9), buf), first_line, at_eof, errors)


def criteo_tokenizer(path: Path) -> CriteoTokenizer:
    """The tokenizer of the file's layout: DeepCTR's CSV when its first line is that header, else train.txt's."""
    with open(path, "rb") as f:
        first = f.readline(1 << 16).rstrip(b"\r\n")
    if first == CSV_HEADER:
        return CriteoCsvTokenizer(path)
    if first.startswith(b"label,") or first.startswith(b"label\t"):
        raise PreprocessError(f"{path}:1: a header line, but not DeepCTR's label,I1..I13,C1..C26 in that order "
                              f"({first[:60].decode('ascii', 'replace')}...); {FORMAT_HINT}")
    return CriteoTokenizer(path)
