"""Which rows of the file go to train, valid and test: a seeded assignment array.

Symbols: N good rows.

rand  test = the first ceil(test_fraction * N) rows of default_rng(seed).permutation(N), as
      sklearn's train_test_split(test_size=float) counts them; valid (valid_fraction > 0) = the next
      ceil(valid_fraction * N) rows of the same permutation. With valid_fraction 0 the test rows
      are exactly those of a dataset made before valid splits existed.
seq   (Criteo, the reference's "seq") the first int((1 - 1/7) N) rows train, the rest test.
x4    (criteo_x4 preset) random 8:1:1 train/valid/test.
none  every row, in file order, into one split "all": a file to score with a run's vocabularies
      (preprocess --vocab-from RUN_DATA --split none, then engine.evaluate --split all).
Rows inside a split keep their file order; the reader shuffles.
"""
from __future__ import annotations

import math

import numpy as np

TRAIN, VALID, TEST, ALL = 0, 1, 2, 3
SPLIT_NAMES = ("train", "valid", "test", "all")


def assign_splits(n: int, split: str, seed: int, test_fraction: float, valid_fraction: float = 0.0
                  ) -> tuple[np.ndarray, dict[str, int]]:
    """-> assign (N,) int8 with TRAIN / VALID / TEST per row, and {split name: rows}.

    valid appears in the row counts only when the split makes one.
    """
    assign = np.zeros(n, dtype=np.int8)
    has_valid = False
    if split == "seq":
        assign[int((1 - 1 / 7) * n):] = TEST
    elif split == "rand":
        perm = np.random.default_rng(seed).permutation(n)
        n_test = math.ceil(test_fraction * n)
        assign[perm[:n_test]] = TEST
        if valid_fraction > 0:
            n_valid = math.ceil(valid_fraction * n)
            assign[perm[n_test:n_test + n_valid]] = VALID
            has_valid = True
    elif split == "x4":                                  # random 8:1:1
        perm = np.random.default_rng(seed).permutation(n)
        n_test = n_valid = int(round(0.1 * n))
        assign[perm[:n_test]] = TEST
        assign[perm[n_test:n_test + n_valid]] = VALID
        has_valid = True
    elif split == "none":
        assign[:] = ALL
        return assign, {"all": n}
    else:
        raise ValueError(f"split must be rand, seq, x4 or none, got {split!r}")
    counts = np.bincount(assign, minlength=3)
    rows = {"train": int(counts[TRAIN]), "test": int(counts[TEST])}
    if has_valid:
        rows["valid"] = int(counts[VALID])
    return assign, rows
