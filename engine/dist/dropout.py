"""Dropout masks that do not depend on the number of ranks.

A one-process run draws each dropout mask for the whole batch, rng.random((B, H)). A rank holding
rows [lo, hi) of that batch draws the same (B, H) numbers from the same generator (every rank's
generator is in the same state) and keeps rows [lo, hi): so with --dropout > 0 the N-rank run
uses exactly the masks of the one-process run, at the cost of each rank drawing the whole
batch's random numbers (what the one process draws anyway).

This relies on the models drawing their masks as rng.random(shape) with the batch first
(engine/layers/mlp.py), once per layer in a fixed order. One case breaks it: a global batch with
fewer rows than ranks leaves a rank with no rows, which draws nothing; its generator then falls
behind the others' (the gradients stay equal on all ranks, but later masks on that rank differ
from a one-process run). Use batches of at least N rows.
"""


class GlobalBatchRandom:
    """Stands in for the numpy Generator passed to model.loss on a rank holding rows [lo, hi)
    of a batch of `global_rows` rows."""

    def __init__(self, rng, global_rows: int, lo: int, hi: int):
        self.rng, self.global_rows, self.lo, self.hi = rng, global_rows, lo, hi

    def random(self, shape):
        """shape (hi - lo, ...) -> the rows [lo, hi) of a (global_rows, ...) draw."""
        if shape[0] != self.hi - self.lo:
            raise ValueError(f"a dropout draw of {shape[0]} rows on a rank holding {self.hi - self.lo}")
        return self.rng.random((self.global_rows, *shape[1:]))[self.lo:self.hi]
