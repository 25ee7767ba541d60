"""Each rank's share of every global batch.

A rank wraps the single-process BatchReader (same data, seed and global batch size b) and keeps
rows [r b_k / N, (r + 1) b_k / N) of global batch k (b_k = b except perhaps for an epoch's last
batch). So the global batches, and their order, are those of a one-process run with the same
seed, and resuming at (epoch, step) works as it does there.
"""


def rank_rows(global_rows: int, rank: int, size: int) -> tuple[int, int]:
    """-> [lo, hi) of `rank`'s rows in a batch of `global_rows` rows."""
    return global_rows * rank // size, global_rows * (rank + 1) // size


class RankSliceReader:
    """A BatchReader's batches, cut to this rank's rows. Same steps_per_epoch as the reader."""

    def __init__(self, reader, rank: int, size: int):
        self.reader, self.rank, self.size = reader, rank, size

    @property
    def steps_per_epoch(self) -> int:
        return self.reader.steps_per_epoch

    def __len__(self) -> int:
        return self.reader.steps_per_epoch

    def iter_epoch(self, epoch: int, start_step: int = 0):
        for batch in self.reader.iter_epoch(epoch, start_step):
            lo, hi = rank_rows(batch.label.shape[0], self.rank, self.size)
            yield type(batch)(*(a[lo:hi] for a in batch))
