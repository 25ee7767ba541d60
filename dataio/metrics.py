"""AUC and logloss in float64, used for the Bayes-optimal metrics of synthetic data and in tests.

Symbols: n rows.
"""
from __future__ import annotations

import numpy as np


def auc(label: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC = P(score of a random positive > score of a random negative), ties count 1/2.

    Mann-Whitney form: (sum of positive ranks - P(P+1)/2) / (P N), with average ranks for ties.
    label (n,) in {0,1}, score (n,).
    """
    label = np.asarray(label).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    order = np.argsort(score, kind="stable")
    sorted_score = score[order]
    # Average rank (1-based) of each run of equal scores.
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    ends = np.r_[starts[1:], len(score)]
    run_rank = (starts + 1 + ends) / 2.0
    ranks = np.empty(len(score), dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    n_pos = int(label.sum())
    n_neg = len(label) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(label: np.ndarray, prob: np.ndarray, eps: float = 1e-15) -> float:
    """mean(-y ln p - (1 - y) ln(1 - p)), p clipped to [eps, 1 - eps]. label, prob (n,)."""
    y = np.asarray(label, dtype=np.float64)
    p = np.clip(np.asarray(prob, dtype=np.float64), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))
