"""The embedding backward's scatter-add kernels against the NumPy reference."""
import numpy as np
import pytest

from engine.kernels import scatter_add as sa


def _zipf_ids(rng, n, vocab):
    return np.minimum(rng.zipf(1.3, n) - 1, vocab - 1).astype(np.int64)


@pytest.mark.parametrize("dtype,exact", [(np.float64, True), (np.float32, False)])
def test_cpu_kernel_equals_reference(dtype, exact):
    rng = np.random.default_rng(1)
    vocab = 1000
    ids = _zipf_ids(rng, 5000, vocab)             # id 0 repeated hundreds of times, a long tail seen once
    src = rng.normal(size=(ids.size, 7)).astype(dtype)
    unique, inverse, counts = sa.index_ids_numpy(ids, vocab)
    expected = sa.scatter_add_rows_numpy(inverse, src, unique.size)
    u2, inv2, c2 = sa.IdIndexer()(ids, vocab)
    rows = sa.scatter_add_rows_cpu(inv2, src, u2.size)
    order = np.argsort(u2)
    assert np.array_equal(u2[order], unique) and np.array_equal(c2[order], counts)
    assert counts.max() > 100 and (counts == 1).any()
    if exact:
        assert np.array_equal(rows[order], expected)
    else:
        np.testing.assert_allclose(rows[order], expected, rtol=1e-6, atol=1e-6)


def test_indexer_reuses_its_workspace_cleanly():
    # a second batch must not see ids of the first (the position map is reset after each call)
    indexer = sa.IdIndexer()
    indexer(np.array([3, 3, 5]), 10)
    unique, inverse, counts = indexer(np.array([5, 7, 5]), 10)
    assert unique.tolist() == [5, 7] and counts.tolist() == [2, 1] and inverse.tolist() == [0, 1, 0]


def test_reference_keeps_repeated_ids():
    rows = sa.scatter_add_rows_numpy(np.array([0, 0, 1]), np.ones((3, 2)), 2)
    assert rows.tolist() == [[2.0, 2.0], [1.0, 1.0]]
