"""Embedding backward's sparse part: unique ids, their counts, and summed gradient rows.

Symbols: N = number of looked-up ids (B * F), C = columns of a gradient row (K, or 1 for the
linear table), V = table rows, U = unique ids in the batch.

    unique, inverse, counts = index_ids(ids)           # ids [N] -> [U], [N], [U]
    rows = scatter_add_rows(inverse, src, U)           # src [N, C] -> rows [U, C]
    rows[u] = sum of src[i] over every i with inverse[i] == u

`rows` is the gradient of the table restricted to the ids that occur, so no [V, C] array is
ever made; `counts` is what CowClip multiplies its threshold by (Algorithm 1, cnt_k).

Layout: NumPy form (`*_numpy`, the test oracle), Numba CPU version, Numba CUDA version with its
launcher. The NumPy form returns ids sorted; the Numba CPU version returns them in order of first
occurrence (it needs no sort). Both sum each row in the order of the batch, so their float64
results are equal once aligned by id. The CUDA version sums each row in float64 in a fixed order
(no atomics): bitwise reproducible, within the error bound stated above its kernels.
"""
import numba
import numpy as np

from engine.kernels.common import THREADS_PER_BLOCK, array_module_of, cuda, float64, launch

# --------------------------------------------------------------------------------------------
# NumPy form (the test oracle)


def index_ids_numpy(ids: np.ndarray, num_rows: int):
    """ids [N] -> (unique [U] sorted, inverse [N], counts [U])."""
    unique, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    return unique.astype(np.int64), inverse.astype(np.int64), counts.astype(np.int64)


def scatter_add_rows_numpy(inverse: np.ndarray, src: np.ndarray, num_unique: int) -> np.ndarray:
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
# Numba CUDA: ids are indexed with CuPy's (sorted) unique. Rows are summed without atomics, as a
# segmented sum in a fixed order, so the same inputs give the same bits on every run and under
# every launch configuration:
#   order   = stable argsort of inverse: each unique row's entries, contiguous, in batch order
#   segment u = order[starts[u]:starts[u+1]], cut into chunks of SEGMENT_CHUNK entries
#   pass 1  one thread per (chunk, column) sums its chunk in float64, in order
#   pass 2  one thread per (row, column) sums its chunks' partial sums in float64, in order,
#           and rounds once to the output dtype
# Chunking bounds the work of one thread when one id fills much of the batch (a frequent value
# of a field occurs up to B times).
#
# Error bound (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., section 4.2):
# every float64 addition has relative error <= u64 = 2^-53 and each x_i passes through at most
# d = (min(n, L) - 1) + (ceil(n / L) - 1) of them (n entries in the segment, L = SEGMENT_CHUNK;
# the first addition of a chunk or a row is to 0.0, which is exact), so the float64 sum s of
# S = sum x_i has |s - S| <= gamma_d * sum |x_i|, gamma_d = d u64 / (1 - d u64). Rounding s to
# float32 adds at most u32 |s|, u32 = 2^-24. In all (normal range):
#     |rows[u, c] - S| <= u32 |S| + (1 + u32) gamma_d sum |x_i|
# i.e. the result is the correctly rounded float32 sum up to a float64 term that is negligible
# for any batch size (d = 1,000 gives 1.1e-13 sum |x_i|). The float32 atomics it replaces had a
# bound of (n - 1) u32 sum |x_i| and a different rounding on every run.

SEGMENT_CHUNK = 256


@cuda.jit
def _chunk_sums_kernel(order, src, starts, chunk_first, chunk_row, partial):
    """partial[q, c] = float64 sum of src[order[p], c] over the sorted positions p of chunk q."""
    t = cuda.grid(1)
    num_columns = src.shape[1]
    if t < partial.shape[0] * num_columns:
        q = t // num_columns
        c = t - q * num_columns
        u = chunk_row[q]
        begin = starts[u] + (q - chunk_first[u]) * SEGMENT_CHUNK
        end = min(begin + SEGMENT_CHUNK, starts[u + 1])
        total = 0.0
        for p in range(begin, end):          # empty for the spare chunks past the last one
            total += float64(src[order[p], c])
        partial[q, c] = total


@cuda.jit
def _segment_sums_kernel(chunk_first, partial, rows):
    """rows[u, c] = sum of partial[q, c] over row u's chunks, in order, rounded once."""
    t = cuda.grid(1)
    num_columns = rows.shape[1]
    if t < rows.shape[0] * num_columns:
        u = t // num_columns
        c = t - u * num_columns
        total = 0.0
        for q in range(chunk_first[u], chunk_first[u + 1]):
            total += partial[q, c]
        rows[u, c] = total


def index_ids_cuda(ids, num_rows: int):
    import cupy

    unique, inverse, counts = cupy.unique(ids, return_inverse=True, return_counts=True)
    return unique.astype(cupy.int64), inverse.ravel().astype(cupy.int64), counts.astype(cupy.int64)


def segment_layout(xp, inverse, num_unique: int):
    """-> order [N], starts [U+1], chunk_first [U+1], chunk_row [Q]: the fixed order of the sum.

    No value is read back to the host: Q is the bound U + N // L on the number of chunks
    (sum over u of ceil(n_u / L) <= sum of (n_u / L + 1)); chunks past the last are empty."""
    n = inverse.shape[0]
    order = xp.argsort(inverse, kind="stable")                                        # (N,)
    starts = xp.searchsorted(inverse[order], xp.arange(num_unique + 1))              # (U+1,)
    chunks = (starts[1:] - starts[:-1] + SEGMENT_CHUNK - 1) // SEGMENT_CHUNK          # (U,)
    chunk_first = xp.concatenate([xp.zeros(1, dtype=chunks.dtype), xp.cumsum(chunks)])  # (U+1,)
    num_chunks = num_unique + n // SEGMENT_CHUNK
    chunk_row = xp.searchsorted(chunk_first, xp.arange(num_chunks), side="right") - 1  # (Q,)
    chunk_row = xp.minimum(chunk_row, num_unique - 1)        # spare chunks: any valid row
    return order, starts, chunk_first, chunk_row


def scatter_add_rows_cuda(inverse, src, num_unique: int, threads_per_block: int = THREADS_PER_BLOCK):
    """src [N, C] -> rows [U, C] in src's dtype, deterministic (see the bound above)."""
    xp = array_module_of(src)
    src = xp.ascontiguousarray(src)
    rows = xp.zeros((num_unique, src.shape[1]), dtype=src.dtype)
    if num_unique == 0:
        return rows
    order, starts, chunk_first, chunk_row = segment_layout(xp, inverse, num_unique)
    partial = xp.empty((chunk_row.shape[0], src.shape[1]), dtype=xp.float64)       # (Q, C)
    launch(_chunk_sums_kernel, partial.size, order, src, starts, chunk_first, chunk_row, partial,
           threads_per_block=threads_per_block)
    launch(_segment_sums_kernel, rows.size, chunk_first, partial, rows, threads_per_block=threads_per_block)
    return rows
