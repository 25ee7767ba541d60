"""Embedding backward's sparse part: unique ids, their counts, and summed gradient rows.

Symbols: N = number of looked-up ids (B * F), C = columns of a gradient row (K, or 1 for the
linear table), V = table rows, U = unique ids in the batch.

    unique, inverse, counts = index_ids(ids)           # ids [N] -> [U], [N], [U]
    rows = scatter_add_rows(inverse, src, U)           # src [N, C] -> rows [U, C]
    rows[u] = sum of src[i] over every i with inverse[i] == u

`rows` is the gradient of the table restricted to the ids that occur, so no [V, C] array is
ever made; `counts` is what CowClip multiplies its threshold by (Algorithm 1, cnt_k).

Layout: NumPy reference, Numba CPU version, Numba CUDA version with its launcher.
The NumPy reference returns ids sorted; the Numba CPU version returns them in order of first
occurrence (it needs no sort). Both sum each row in the order of the batch, so their float64
results are equal once aligned by id.
"""
import numba
import numpy as np

from engine.kernels.common import array_module_of, cuda, launch

# --------------------------------------------------------------------------------------------
# NumPy reference (the test oracle)


def index_ids_reference(ids: np.ndarray, num_rows: int):
    """ids [N] -> (unique [U] sorted, inverse [N], counts [U])."""
    unique, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    return unique.astype(np.int64), inverse.astype(np.int64), counts.astype(np.int64)


def scatter_add_rows_reference(inverse: np.ndarray, src: np.ndarray, num_unique: int) -> np.ndarray:
    """src [N, C] -> rows [U, C]; np.add.at keeps repeated ids (rows[inverse] += src would not)."""
    rows = np.zeros((num_unique, src.shape[1]), dtype=src.dtype)
    np.add.at(rows, inverse, src)
    return rows


# --------------------------------------------------------------------------------------------
# Numba CPU: a persistent position map of size V replaces the sort of np.unique.


@numba.njit(cache=True)
def _index_ids_cpu(ids, position, unique, inverse, counts):
    # position[v] == -1 for every v not yet seen in this batch; set back to -1 before returning
    num_unique = 0
    for i in range(ids.shape[0]):
        v = ids[i]
        u = position[v]
        if u < 0:
            u = num_unique
            position[v] = u
            unique[u] = v
            num_unique += 1
        counts[u] += 1
        inverse[i] = u
    for u in range(num_unique):
        position[unique[u]] = -1
    return num_unique


class IdIndexer:
    """Numba CPU `index_ids`, holding a [V] position map that is reused across steps."""

    def __init__(self):
        self._position = np.empty(0, dtype=np.int32)

    def __call__(self, ids: np.ndarray, num_rows: int):
        if self._position.shape[0] != num_rows:
            self._position = np.full(num_rows, -1, dtype=np.int32)
        ids = np.ascontiguousarray(ids)
        unique = np.empty(ids.shape[0], dtype=np.int64)
        inverse = np.empty(ids.shape[0], dtype=np.int64)
        counts = np.zeros(ids.shape[0], dtype=np.int64)
        n = _index_ids_cpu(ids, self._position, unique, inverse, counts)
        return unique[:n].copy(), inverse, counts[:n].copy()


@numba.njit(cache=True)
def _scatter_add_rows_cpu(inverse, src, rows):
    for i in range(src.shape[0]):
        u = inverse[i]
        for c in range(src.shape[1]):
            rows[u, c] += src[i, c]


def scatter_add_rows_cpu(inverse: np.ndarray, src: np.ndarray, num_unique: int) -> np.ndarray:
    rows = np.zeros((num_unique, src.shape[1]), dtype=src.dtype)
    _scatter_add_rows_cpu(inverse, np.ascontiguousarray(src), rows)
    return rows


# --------------------------------------------------------------------------------------------
# Numba CUDA: ids are indexed with CuPy's (sorted) unique; rows are summed with atomics, so
# the order of the additions, and the last bits of float32 sums, vary from run to run.


@cuda.jit
def _scatter_add_rows_kernel(inverse, src, rows):
    t = cuda.grid(1)
    n, c = src.shape
    if t < n * c:
        i = t // c
        j = t - i * c
        cuda.atomic.add(rows, (inverse[i], j), src[i, j])


def index_ids_cuda(ids, num_rows: int):
    import cupy

    unique, inverse, counts = cupy.unique(ids, return_inverse=True, return_counts=True)
    return unique.astype(cupy.int64), inverse.ravel().astype(cupy.int64), counts.astype(cupy.int64)


def scatter_add_rows_cuda(inverse, src, num_unique: int):
    xp = array_module_of(src)
    rows = xp.zeros((num_unique, src.shape[1]), dtype=src.dtype)
    launch(_scatter_add_rows_kernel, src.shape[0] * src.shape[1], inverse, xp.ascontiguousarray(src), rows)
    return rows
