"""The data's shape as the models see it: each sparse field's vocabulary and the dense width (`Schema`),
and one mini-batch of it (`Batch`, the models' input type).

Symbols: B batch, F sparse fields, D dense features.
"""
from collections import namedtuple
from dataclasses import dataclass, field

import numpy as np

Batch = namedtuple("Batch", ["sparse", "dense", "label"])
Batch.__doc__ = "sparse int32 (B, F), dense float32 (B, D), label float32 (B,)"


@dataclass(frozen=True)
class Schema:
    vocab_sizes: tuple          # (F,) rows of each sparse field's vocabulary
    num_dense: int              # D
    sparse_names: tuple = field(default=())
    dense_names: tuple = field(default=())

    def __post_init__(self):
        if not self.sparse_names:
            object.__setattr__(self, "sparse_names", tuple(f"C{i + 1}" for i in range(len(self.vocab_sizes))))
        if not self.dense_names:
            object.__setattr__(self, "dense_names", tuple(f"I{i + 1}" for i in range(self.num_dense)))
        if len(self.sparse_names) != len(self.vocab_sizes) or len(self.dense_names) != self.num_dense:
            raise ValueError("schema: field names and sizes disagree")
        if any(int(v) < 1 for v in self.vocab_sizes):
            raise ValueError(f"schema: every vocabulary needs at least one row, got {self.vocab_sizes}")

    @property
    def num_fields(self) -> int:
        return len(self.vocab_sizes)

    @property
    def offsets(self) -> np.ndarray:
        """(F,) first row of each field in the shared table."""
        return np.concatenate([[0], np.cumsum(self.vocab_sizes)[:-1]]).astype(np.int64)

    @property
    def total_rows(self) -> int:
        """V: rows of the shared table."""
        return int(np.sum(self.vocab_sizes))

    @classmethod
    def from_meta(cls, meta: dict) -> "Schema":
        """From a dataset's meta.json (see dataio/meta.py)."""
        sparse = meta["sparse_features"]
        dense = meta["dense_features"]
        return cls(tuple(int(f["vocab_size"]) for f in sparse), len(dense),
                   tuple(f["name"] for f in sparse), tuple(f["name"] for f in dense))
