"""Evaluation metrics on host or device arrays (the same lines run on NumPy and CuPy).

In the data layer because both layers score predictions: the engine its evaluations, the data
layer the Bayes-optimal predictor of a synthetic set (dataio imports nothing from engine).

    AUC     = (sum of the positives' ranks - P (P + 1) / 2) / (P N)     Mann-Whitney, ranks 1-based,
              tied scores share their average rank (so ties count 1/2, as scikit-learn's roc_auc_score)
    logloss = mean(-y ln p - (1 - y) ln(1 - p)),  p clipped to [1e-15, 1 - 1e-15]
    NE      = sum(-y ln p - (1 - y) ln(1 - p)) / (-P ln c - N ln(1 - c)),   c = P / n the observed CTR,
              p and c clipped to [1e-12, 1 - 1e-12]: the logloss over the logloss of always
              predicting the observed CTR (torchrec's normalized entropy; < 1 means better than that)
    calibration = sum(p) / sum(y): mean predicted CTR over observed CTR (torchrec's; 1 is calibrated)
P positives, N negatives, n = P + N rows.
"""
import math

import numpy as np

from dataio.arrays import array_module_of


def auc(label, score) -> float:
    """label (n,) in {0, 1}, score (n,) -> ROC AUC in float64; nan if one class is missing."""
    xp = array_module_of(score)
    score = score.astype(xp.float64)
    positive = label.astype(bool)
    n = score.shape[0]
    order = xp.argsort(score, kind="stable")
    sorted_score = score[order]
    new_run = xp.empty(n, dtype=bool)
    new_run[:1] = True
    new_run[1:] = sorted_score[1:] != sorted_score[:-1]
    starts = xp.flatnonzero(new_run)                                  # first position of each tie run
    ends = xp.concatenate([starts[1:], xp.asarray([n], dtype=starts.dtype)])
    run_rank = (starts + 1 + ends) / 2.0                              # average 1-based rank of the run
    run_of_position = xp.cumsum(new_run) - 1
    ranks = xp.empty(n, dtype=xp.float64)
    ranks[order] = run_rank[run_of_position]
    n_pos = int(positive.sum())
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(label, prob, eps: float = 1e-15) -> float:
    xp = array_module_of(prob)
    y = label.astype(xp.float64)
    p = xp.clip(prob.astype(xp.float64), eps, 1 - eps)
    return float(-(y * xp.log(p) + (1 - y) * xp.log1p(-p)).mean())


NE_ETA = 1e-12   # torchrec's clamp for normalized entropy


def normalized_entropy(label, prob, eta: float = NE_ETA) -> float:
    """label (n,), prob (n,) -> NE (float64); nan if one class is missing."""
    xp = array_module_of(prob)
    y = label.astype(xp.float64)
    p = xp.clip(prob.astype(xp.float64), eta, 1 - eta)
    cross_entropy = float(-(y * xp.log(p) + (1 - y) * xp.log1p(-p)).sum())
    positives, n = float(y.sum()), y.shape[0]
    ctr = min(max(positives / n, eta), 1 - eta)
    baseline = -positives * math.log(ctr) - (n - positives) * math.log1p(-ctr)
    return cross_entropy / baseline if positives not in (0.0, float(n)) else float("nan")


def calibration(label, prob) -> float:
    """label (n,), prob (n,) -> sum(prob) / sum(label); nan without positives."""
    xp = array_module_of(prob)
    positives = float(label.astype(xp.float64).sum())
    return float(prob.astype(xp.float64).sum()) / positives if positives else float("nan")


def all_metrics(label, prob) -> dict:
    """{"auc", "logloss", "ne", "calibration"} of predictions `prob` for `label`."""
    return {"auc": auc(label, prob), "logloss": logloss(label, prob),
            "ne": normalized_entropy(label, prob), "calibration": calibration(label, prob)}
