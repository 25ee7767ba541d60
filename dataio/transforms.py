"""Dense-feature transforms, each given as (params from a fit, apply).

Symbols: n rows, D dense features.

minmax      y = x * scale + offset with scale = 1 / (max - min) (1 when max == min) and
            offset = -min * scale, computed in float64 then cast to float32. This is the exact
            arithmetic of scikit-learn's MinMaxScaler(feature_range=(0, 1)), so codes match the
            reference pipeline bit for bit; min/max are over the whole input file, as there.
log         y = ln(1 + max(x, 0))  (DLRM-style; negatives such as Criteo's I2 = -1 clip to 0)
bucket_x4   criteo_x4 (BARS/FuxiCTR): x -> floor(ln(x)^2) if x > 2 else int(x); the result is a
            category, not a dense value (preprocess turns the field into a sparse field).

Every stored value is the same on every CPU. minmax is one IEEE multiply and one add per value
(each correctly rounded, as separate NumPy calls; min and max are exact). log uses
dataio.portable_math.log1p, not np.log1p, whose SIMD code differs in the last bit between CPUs.
bucket_x4 uses no logarithm at all: floor(ln(x)^2) = b exactly when e^sqrt(b) <= x < e^sqrt(b+1),
so the bucket is the number of thresholds t_b = (the smallest double >= e^sqrt(b)), b >= 1, that
are <= x, a binary search with exact comparisons. The thresholds come from Python's decimal module
(40 digits, correctly rounded exp and sqrt), so the buckets are floor(ln(x)^2) of the real number x
itself, where np.floor(np.log(x) ** 2) may be one off for x next to a threshold.
"""
from __future__ import annotations

import decimal
import threading

import numpy as np

from dataio import portable_math as pm

DENSE_TRANSFORMS = ("minmax", "log", "none")


def minmax_params(col_min: np.ndarray, col_max: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scale, offset (D,) float64 from per-column min and max (D,), as MinMaxScaler computes them."""
    col_min = np.asarray(col_min, dtype=np.float64)
    data_range = np.asarray(col_max, dtype=np.float64) - col_min
    data_range = np.where(data_range == 0.0, 1.0, data_range)  # sklearn's _handle_zeros_in_scale
    scale = 1.0 / data_range
    offset = 0.0 - col_min * scale
    return scale, offset


def minmax_apply(x: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """x (n, D) float64 -> (n, D) float32; same operation order as MinMaxScaler.transform."""
    y = np.asarray(x, dtype=np.float64) * scale
    y += offset
    return y.astype(np.float32)


def log_apply(x: np.ndarray) -> np.ndarray:
    """x (n, D) -> ln(1 + max(x, 0)) as float32."""
    return pm.log1p(np.maximum(np.asarray(x, dtype=np.float64), 0.0)).astype(np.float32)


_thresholds: list[float] = []        # _thresholds[b - 1] = the smallest double >= e^sqrt(b)
_thresholds_lock = threading.Lock()


def x4_thresholds(above: float) -> np.ndarray:
    """(B,) float64 t_b for b = 1..B, the smallest double >= e^sqrt(b), with t_B > above (or t_B = inf)."""
    with _thresholds_lock:
        ctx = decimal.Context(prec=40)
        while not _thresholds or not (_thresholds[-1] > above or _thresholds[-1] == np.inf):
            exact = ctx.exp(ctx.sqrt(decimal.Decimal(len(_thresholds) + 1)))
            t = float(exact)                                  # the nearest double; e^sqrt(b) is never one
            if t != np.inf and decimal.Decimal(t) < exact:
                t = float(np.nextafter(t, np.inf))
            _thresholds.append(t)
        return np.array(_thresholds)


def bucket_x4(x: np.ndarray) -> np.ndarray:
    """x (n, D) float64 -> (n, D) int64 buckets: floor(ln(x)^2) for x > 2, else int(x) (truncation)."""
    x = np.asarray(x, dtype=np.float64)
    big = x > 2
    out = np.trunc(x)
    xb = x[big]
    if xb.size:
        out[big] = np.searchsorted(x4_thresholds(float(xb.max())), xb, side="right")
    return out.astype(np.int64)


def dense_transform_meta(kind: str, names: list[str], col_min=None, col_max=None) -> list[dict]:
    """meta.json entries [{"name", "transform": {...}}] for D dense features."""
    out = []
    for j, name in enumerate(names):
        t: dict = {"type": kind}
        if kind == "minmax":
            t.update(min=float(col_min[j]), max=float(col_max[j]), fill_missing=0.0)
        elif kind == "log":
            t.update(formula="ln(1 + max(x, 0))", fill_missing=0.0)
        out.append({"name": name, "transform": t})
    return out
