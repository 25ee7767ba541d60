"""The CowClip authors' ablations for the scaling study: their names, and a tally of how often
the clip binds over a run.

The rules themselves (cowclip, cowclip_nocnt, cowclip_global, cowclip_field, cowclip_const) are
values of `engine.cowclip.ClipRule`, defined and explained in engine/cowclip.py (section 5);
`clip_rule(name, tally)` gives the one to put in `engine.step.StepConfig(rule=...)`, with a
`ClipTally` attached that counts, by id frequency, how often its clip scaled a row down.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from engine.cowclip import FREQUENCY_BUCKETS, RULES, ClipRule

ABLATIONS = ("cowclip_nocnt", "cowclip_global", "cowclip_field", "cowclip_const")
CLIP_RULES = ("cowclip",) + ABLATIONS


# --------------------------------------------------------------------------------------------
# the audit tally


class ClipTally:
    """Counts, over a run, how many (step, id) pairs the clip scaled down, by bucket of cnt_k.

    Buckets are engine.cowclip.FREQUENCY_BUCKETS (lower edges 1, 2, 4, 16, ...), and each epoch
    is kept apart so the warm-up epoch can be told from the rest. Cheap: one bincount per step."""

    def __init__(self, steps_per_epoch: int, first_step: int = 0):
        self.steps_per_epoch = max(int(steps_per_epoch), 1)
        self.step = int(first_step)
        self.edges = np.asarray(FREQUENCY_BUCKETS, dtype=np.int64)
        self.epochs: dict[int, dict[str, np.ndarray]] = {}

    def __repr__(self) -> str:  # as written into a run's config.json
        return f"ClipTally(steps_per_epoch={self.steps_per_epoch})"

    def labels(self) -> list[str]:
        edges = list(FREQUENCY_BUCKETS) + [None]
        return [f"{lo}" if hi == lo + 1 else f"{lo}-{hi - 1 if hi else 'inf'}" for lo, hi in zip(edges[:-1], edges[1:])]

    def add(self, counts, scales, to_host) -> None:
        counts, scales = to_host(counts), to_host(scales)
        bucket = np.searchsorted(self.edges, counts, side="right") - 1          # (U,)
        n = len(self.edges)
        epoch = self.step // self.steps_per_epoch
        acc = self.epochs.setdefault(epoch, {"ids": np.zeros(n, np.int64), "clipped": np.zeros(n, np.int64),
                                             "scale_sum": np.zeros(n)})
        acc["ids"] += np.bincount(bucket, minlength=n)
        acc["clipped"] += np.bincount(bucket, weights=(scales < 1.0), minlength=n).astype(np.int64)
        acc["scale_sum"] += np.bincount(bucket, weights=scales, minlength=n)
        self.step += 1

    @staticmethod
    def _summary(ids, clipped, scale_sum, labels) -> dict:
        return {label: {"ids": int(i), "clipped_fraction": float(c / i), "mean_scale": float(s / i)}
                for label, i, c, s in zip(labels, ids, clipped, scale_sum) if i}

    def summary(self) -> dict:
        """{"all": {bucket: {ids, clipped_fraction, mean_scale}}, "by_epoch": {"1": {...}, ...}}."""
        labels = self.labels()
        if not self.epochs:
            return {}
        total = {k: sum(acc[k] for acc in self.epochs.values()) for k in ("ids", "clipped", "scale_sum")}
        overall = total["clipped"].sum() / max(total["ids"].sum(), 1)
        return {"clipped_fraction": float(overall), "all": self._summary(total["ids"], total["clipped"],
                                                                         total["scale_sum"], labels),
                "by_epoch": {str(e + 1): self._summary(acc["ids"], acc["clipped"], acc["scale_sum"], labels)
                             for e, acc in sorted(self.epochs.items())}}


# --------------------------------------------------------------------------------------------
# choosing a rule


def clip_rule(name: str, tally: ClipTally | None = None) -> ClipRule:
    """The engine.cowclip.ClipRule named `name`, reporting each clip's scales to `tally`."""
    if name not in CLIP_RULES:
        raise ValueError(f"unknown clip rule {name!r}; choose one of {CLIP_RULES}")
    return replace(RULES[name], tally=tally)
