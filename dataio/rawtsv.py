"""Write rows as raw Criteo `train.txt` lines (label, 13 ints, 26 8-hex-digit strings, tab-separated).

Symbols: n rows, D = 13 dense, F = 26 sparse.

Used by `python -m dataio.synthetic --raw-tsv` and the preprocessing benchmark to exercise the
preprocessor at scale. Missing values are written as empty fields: dense value -1 (a sentinel,
raw synthetic dense values are non-negative) and sparse code 0.
"""
from __future__ import annotations

import numba
import numpy as np

HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


@numba.njit(cache=True)
def _format_rows(label, dense_raw, codes, hex_flat, hex_offsets, hex_digits, out):
    """Fill byte buffer `out` with n lines; returns the number of bytes written.

    label (n,) int8; dense_raw (n, D) int64, -1 = missing; codes (n, F) int32, 0 = missing;
    hex_flat: concatenated per-field tables of the 32-bit value of code c (index hex_offsets[f] + c).
    """
    pos = 0
    digits = np.empty(20, dtype=np.uint8)
    for i in range(label.shape[0]):
        out[pos] = 48 + label[i]
        pos += 1
        for j in range(dense_raw.shape[1]):
            out[pos] = 9  # tab
            pos += 1
            v = dense_raw[i, j]
            if v >= 0:
                k = 0
                while True:
                    digits[k] = 48 + v % 10
                    v //= 10
                    k += 1
                    if v == 0:
                        break
                for t in range(k - 1, -1, -1):
                    out[pos] = digits[t]
                    pos += 1
        for f in range(codes.shape[1]):
            out[pos] = 9
            pos += 1
            c = codes[i, f]
            if c != 0:
                h = hex_flat[hex_offsets[f] + c]
                for t in range(7, -1, -1):
                    out[pos] = hex_digits[(h >> (4 * t)) & 15]
                    pos += 1
        out[pos] = 10  # newline
        pos += 1
    return pos


def format_criteo_lines(label: np.ndarray, dense_raw: np.ndarray, codes: np.ndarray,
                        hex_tables: list[np.ndarray]) -> bytes:
    """Rows -> raw TSV bytes. hex_tables[f] (V_f,) uint32: the hex value printed for code c of field f."""
    offsets = np.cumsum([0] + [len(t) for t in hex_tables[:-1]]).astype(np.int64)
    hex_flat = np.concatenate(hex_tables).astype(np.uint32)
    n = len(label)
    # Upper bound per line: label + 13 * (tab + 19 digits) + 26 * (tab + 8) + newline.
    out = np.empty(n * (2 + 13 * 20 + 26 * 9), dtype=np.uint8)
    used = _format_rows(label.astype(np.int8), dense_raw.astype(np.int64), codes.astype(np.int32),
                        hex_flat, offsets, HEX_DIGITS, out)
    return out[:used].tobytes()
