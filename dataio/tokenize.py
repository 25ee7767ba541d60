"""Numba tokenizer for raw Criteo `train.txt` bytes: the fast path of preprocessing.

Symbols: n lines in a chunk, D = 13 dense, F = 26 sparse; a line has 1 + D + F = 40 tab-separated fields.

A line is accepted only if it has exactly 40 fields, the label is "0" or "1", every dense field is
empty or a decimal number ([+-]digits[.digits][e[+-]digits]) inside the range the parser rounds
exactly (see _parse_decimal: then the value equals Python's float()), and every categorical field
is empty or exactly 8 lowercase hex digits. Anything else is an error with a code and the 0-based
column.

Categorical values become int64 codes: the 32-bit value of the hex string, and -1 for missing. Since
all present values have the same width, the sorted order of the strings (what LabelEncoder uses,
with the reference's fill value "-1" first because '-' < '0') equals the numeric order of the
codes, so np.unique on codes yields the reference vocabulary order.
"""
from __future__ import annotations

import numba
import numpy as np

NUM_DENSE, NUM_SPARSE = 13, 26
NUM_COLUMNS = 1 + NUM_DENSE + NUM_SPARSE
MISSING_CODE = -1

# error codes
ERR_COLUMNS, ERR_LABEL, ERR_DENSE, ERR_SPARSE, ERR_TRUNCATED, ERR_DENSE_RANGE = 1, 2, 3, 4, 5, 6
NUM_ERROR_CODES = 7
ERROR_TEXT = {
    ERR_COLUMNS: "wrong number of columns",
    ERR_LABEL: "label is not 0 or 1",
    ERR_DENSE: "dense value is not a number",
    ERR_SPARSE: "categorical value is not 8 lowercase hex digits",
    ERR_TRUNCATED: "truncated last line (no newline at end of file)",
    ERR_DENSE_RANGE: "dense value outside the exactly parsed range (at most 15 significant digits "
                     "times 10^-22..10^22, |x| < 9e37)",
}


def column_name(col: int) -> str:
    """Criteo column index (0-based) -> label / I1..I13 / C1..C26."""
    if col == 0:
        return "label"
    if col <= NUM_DENSE:
        return f"I{col}"
    return f"C{col - NUM_DENSE}"


# Exact powers of ten: every 10^k with k <= 22 is a double without rounding.
_POW10 = np.array([10.0 ** k for k in range(23)])
_MANTISSA_MAX = 1 << 53


@numba.njit(cache=True)
def _parse_decimal(buf, s, e):
    """(status, value) for buf[s:e] as [+-]digits[.digits][(e|E)[+-]digits], at least one digit.

    status 0: parsed; ERR_DENSE: not a number; ERR_DENSE_RANGE: a number this parser cannot
    round exactly. Exactness (Clinger's fast path): write the value as M * 10^p with M the integer
    of its significant digits (trailing zeros moved into p). If M <= 2^53 and |p| <= 22, M and 10^p
    are exact doubles and one multiply or divide rounds correctly, so the value equals Python's
    float(text). p > 22 is accepted while M * 10^(p - 22) still fits in 2^53. Anything else
    (more than ~15 significant digits, |x| >= ~9e37, tiny scales) is out of range.
    """
    i = s
    neg = False
    if i < e and (buf[i] == 45 or buf[i] == 43):
        neg = buf[i] == 45
        i += 1
    mant = 0            # M without the pending zeros
    zeros = 0           # zeros seen after the last nonzero digit (not yet multiplied into M)
    too_big = False
    ndig = 0
    frac = 0
    in_frac = False
    while i < e:
        c = buf[i]
        if c == 46 and not in_frac:
            in_frac = True
            i += 1
            continue
        if not (48 <= c <= 57):
            break
        ndig += 1
        if in_frac:
            frac += 1
        d = c - 48
        if d == 0:
            if mant != 0:
                zeros += 1
        elif not too_big:
            for _ in range(zeros + 1):
                if mant > _MANTISSA_MAX // 10:
                    too_big = True
                    break
                mant *= 10
            zeros = 0
            if not too_big:
                mant += d
                if mant > _MANTISSA_MAX:
                    too_big = True
        i += 1
    if ndig == 0:
        return ERR_DENSE, 0.0
    exp = 0
    if i < e and (buf[i] == 101 or buf[i] == 69):
        i += 1
        eneg = False
        if i < e and (buf[i] == 45 or buf[i] == 43):
            eneg = buf[i] == 45
            i += 1
        edig = 0
        while i < e and 48 <= buf[i] <= 57:
            exp = exp * 10 + (buf[i] - 48)
            edig += 1
            i += 1
            if exp > 100000:
                exp = 100000
        if edig == 0:
            return ERR_DENSE, 0.0
        if eneg:
            exp = -exp
    if i != e:
        return ERR_DENSE, 0.0
    if mant == 0 and not too_big:
        return 0, -0.0 if neg else 0.0
    if too_big:
        return ERR_DENSE_RANGE, 0.0
    p = exp - frac + zeros
    while p > 22 and mant <= _MANTISSA_MAX // 10:   # move surplus powers of ten into M, exactly
        mant *= 10
        p -= 1
    if p > 22 or p < -22:
        return ERR_DENSE_RANGE, 0.0
    v = float(mant)
    if p > 0:
        v = v * _POW10[p]
    elif p < 0:
        v = v / _POW10[-p]
    return 0, -v if neg else v


@numba.njit(cache=True)
def _hex8(buf, s, e):
    """32-bit value of exactly 8 lowercase hex digits in buf[s:e], or -2 if it is not that."""
    if e - s != 8:
        return -2
    v = 0
    for i in range(s, e):
        c = buf[i]
        if 48 <= c <= 57:
            d = c - 48
        elif 97 <= c <= 102:
            d = c - 87
        else:
            return -2
        v = v * 16 + d
    return v


@numba.njit(cache=True, nogil=True)
def parse_criteo(buf, first_line, at_eof, label, dense, codes, err_line, err_code, err_col, err_counts,
                 stop_at_first):
    """Tokenize whole lines of buf (uint8).

    Writes good rows to label (n,) int8, dense (n, D) float64 (missing -> 0), codes (n, F) int64
    (missing -> -1). Bad lines are counted by error code in err_counts (NUM_ERROR_CODES,) and the
    first len(err_line) of them are kept in err_line/err_code/err_col, so memory for errors is
    bounded whatever the input. With stop_at_first the scan ends at the first bad line (--on-error
    fail). Lines are numbered from first_line. A final line without a newline is an error when
    at_eof (the caller passes only whole lines otherwise). Returns (good rows, bad lines, lines seen).
    """
    n_buf = buf.shape[0]
    keep = err_line.shape[0]
    row = 0
    n_err = 0
    line = first_line
    pos = 0
    while pos < n_buf:
        if row >= label.shape[0]:          # cannot happen: buffers are sized for every possible row
            break
        code = 0
        col_bad = 0
        col = 0
        fs = pos
        has_newline = False
        while True:
            # one scan: find the end of this field (tab, newline or end of buffer)
            fe = fs
            while fe < n_buf:
                c = buf[fe]
                if c == 9 or c == 10:
                    break
                fe += 1
            if code == 0:
                if col >= 40:
                    code = ERR_COLUMNS
                    col_bad = col
                elif col == 0:
                    if fe - fs == 1 and (buf[fs] == 48 or buf[fs] == 49):
                        label[row] = buf[fs] - 48
                    else:
                        code = ERR_LABEL
                        col_bad = 0
                elif col <= 13:
                    if fe == fs:
                        dense[row, col - 1] = 0.0
                    else:
                        status, v = _parse_decimal(buf, fs, fe)
                        if status == 0:
                            dense[row, col - 1] = v
                        else:
                            code = status
                            col_bad = col
                else:
                    if fe == fs:
                        codes[row, col - 14] = -1
                    else:
                        h = _hex8(buf, fs, fe)
                        if h < 0:
                            code = ERR_SPARSE
                            col_bad = col
                        else:
                            codes[row, col - 14] = h
            col += 1
            if fe >= n_buf:
                break
            if buf[fe] == 10:
                has_newline = True
                break
            fs = fe + 1
        end = fe
        if code == 0 and col != 40:
            code = ERR_COLUMNS
            col_bad = col
        if code == 0 and not has_newline and at_eof:
            code = ERR_TRUNCATED
            col_bad = col - 1
        line += 1
        pos = end + 1
        if code == 0:
            row += 1
            continue
        if n_err < keep:
            err_line[n_err] = line - 1
            err_code[n_err] = code
            err_col[n_err] = col_bad
        err_counts[code] += 1
        n_err += 1
        if stop_at_first:
            break
    return row, n_err, line - first_line
