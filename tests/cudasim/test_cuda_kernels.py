"""The CUDA kernels, run by Numba's CUDA simulator, against the NumPy float64 reference.

Run via tests/test_cuda_simulator.py, which starts pytest on this folder with
NUMBA_ENABLE_CUDASIM=1 (it must be set before Numba is imported, so not in this process)."""
import math
import os

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") != "1",
                                reason="needs NUMBA_ENABLE_CUDASIM=1 (see tests/test_cuda_simulator.py)")


def _case(dtype, seed=0):
    rng = np.random.default_rng(seed)
    V, K = 40, 3
    ids = np.concatenate([np.zeros(20, dtype=np.int64), rng.integers(0, V, 30)])  # id 0 many times
    src = rng.normal(size=(ids.size, K)).astype(dtype)
    table = rng.normal(size=(V, K)).astype(dtype)
    table[5] = 0.0
    return ids, src, table


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_scatter_add_cuda(dtype, rtol):
    from engine.kernels import scatter_add as sa

    ids, src, _ = _case(dtype)
    unique, inverse, counts = sa.index_ids_reference(ids, 40)
    want = sa.scatter_add_rows_reference(inverse, src.astype(np.float64), unique.size)
    got = sa.scatter_add_rows_cuda(inverse, src, unique.size)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)


def _heavy_case(seed=1):
    """N = 4000 ids over V = 300 rows, one id 3,000 times (12 chunks of SEGMENT_CHUNK), float32."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.concatenate([np.full(3000, 7), rng.integers(0, 300, 1000)]))
    src = (rng.normal(size=(ids.size, 3)) + 0.3).astype(np.float32)      # a nonzero mean: |S| grows with n
    return ids, src


def segmented_sum_bound(src, inverse, num_unique, chunk):
    """The bound stated in engine/kernels/scatter_add.py, against the exact sum: [U, C]."""
    u32, u64 = 2.0 ** -24, 2.0 ** -53
    n = np.bincount(inverse, minlength=num_unique)[:, None]                                  # (U, 1)
    d = (np.minimum(n, chunk) - 1) + (-(-n // chunk) - 1)
    gamma = d * u64 / (1 - d * u64)
    abs_sum = np.zeros((num_unique, src.shape[1]))
    np.add.at(abs_sum, inverse, np.abs(src.astype(np.float64)))
    exact = np.array([[math.fsum(src[inverse == u, c].astype(np.float64)) for c in range(src.shape[1])]
                      for u in range(num_unique)])                   # correctly rounded in float64
    # |rows - exact| <= |rows - S| + |S - exact| <= (u32 + u64) |S| + (1 + u32) gamma sum|x|
    return exact, (u32 + u64) / (1 - u64) * np.abs(exact) + (1 + u32) * gamma * abs_sum


def test_scatter_add_cuda_within_the_derived_bound_of_the_exact_sum():
    from engine.kernels import scatter_add as sa

    ids, src = _heavy_case()
    unique, inverse, counts = sa.index_ids_reference(ids, 300)
    got = sa.scatter_add_rows_cuda(inverse, src, unique.size).astype(np.float64)
    exact, bound = segmented_sum_bound(src, inverse, unique.size, sa.SEGMENT_CHUNK)
    assert counts.max() >= 3000
    assert np.all(np.abs(got - exact) <= bound), np.max(np.abs(got - exact) / bound)
    # the bound is tight enough to catch float32 accumulation (what the atomics did, in some order)
    float32_sum = sa.scatter_add_rows_reference(inverse, src, unique.size).astype(np.float64)
    assert np.any(np.abs(float32_sum - exact) > bound)


def test_scatter_add_cuda_sums_in_a_fixed_order_whatever_the_launch():
    """Same bits on two runs and under three block sizes, and the same bits as a plain-Python sum
    in the documented order: so no result depends on which thread runs when."""
    from engine.kernels import scatter_add as sa

    ids, src = _heavy_case(seed=2)
    unique, inverse, _ = sa.index_ids_reference(ids, 300)
    runs = [sa.scatter_add_rows_cuda(inverse, src, unique.size, threads_per_block=tpb)
            for tpb in (256, 256, 64, 32)]
    for other in runs[1:]:
        assert other.dtype == np.float32 and other.tobytes() == runs[0].tobytes()
    L = sa.SEGMENT_CHUNK
    want = np.empty_like(runs[0])
    for u in range(unique.size):
        entries = np.flatnonzero(inverse == u)                                  # batch order
        for c in range(src.shape[1]):
            partials = []
            for begin in range(0, entries.size, L):
                total = 0.0
                for i in entries[begin:begin + L]:
                    total += float(src[i, c])
                partials.append(total)
            total = 0.0
            for p in partials:
                total += p
            want[u, c] = total
    assert want.tobytes() == runs[0].tobytes()


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_cowclip_cuda(dtype, rtol):
    from engine.kernels import cowclip as cc
    from engine.kernels import scatter_add as sa

    ids, src, table = _case(dtype)
    ids[-1] = 5                                   # a zero weight row: the floor binds
    unique, inverse, counts = sa.index_ids_reference(ids, 40)
    rows = sa.scatter_add_rows_reference(inverse, src.astype(np.float64), unique.size)
    rows[1] = 0.0                                 # a zero gradient row
    want, want_scales = cc.cowclip_rows_reference(rows, table.astype(np.float64), unique, counts, 0.3, 0.05)
    got, scales = rows.astype(dtype), np.empty(unique.size)
    cc.cowclip_rows_cuda(got, table, unique, counts, 0.3, 0.05, scales)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 1e-3)
    np.testing.assert_allclose(scales, want_scales, rtol=rtol)
    assert (want_scales < 1).any() and (want_scales == 1).any()


@pytest.mark.parametrize("mode", ["rows", "table"])
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_adam_cuda(mode, dtype, rtol):
    from engine.kernels import adam

    rng = np.random.default_rng(3)
    table = rng.normal(size=(12, 3))
    ids = np.array([0, 4, 7])
    rows = rng.normal(size=(3, 3))
    ref = [table.copy(), np.zeros_like(table), np.zeros_like(table)]
    got = [a.astype(dtype) for a in ref]
    for _ in range(3):
        if mode == "rows":
            adam.adam_rows_reference(*ref, ids, rows, 1e-2, 0.9, 0.999, 1e-7)
            adam.adam_rows_cuda(*got, ids, rows.astype(dtype), 1e-2, 0.9, 0.999, 1e-7)
        else:
            adam.adam_table_reference(*ref, ids, rows, 0.6, 1.0, 0.01, 1e-2, 0.9, 0.999, 1e-7)
            adam.adam_table_cuda(*got, ids, rows.astype(dtype), 0.6, 1.0, 0.01, 1e-2, 0.9, 0.999, 1e-7)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=rtol, atol=rtol * 1e-2)


def test_full_training_step_on_cuda_backend_matches_numpy_backend():
    from engine.backend import get_backend
    from engine.optim import AdamState
    from engine.step import StepConfig, train_step
    from models import ModelConfig, Schema, build_model
    from validate.gradcheck import check_batch

    model = build_model("deepfm", Schema((4, 12, 1, 6), 3),
                        ModelConfig(embed_dim=3, dnn_hidden=(5,), init_stddev=0.3, dtype="float64"))
    batch = check_batch()
    config = StepConfig(lr=1e-2, lr_embed=1e-2, l2=1e-3, clip=0.1, bound=1e-3)
    results = []
    for name in ("numpy", "cuda"):
        kernels = get_backend(name)
        params = model.init_params(7)
        state = AdamState.zeros_like(params, np)
        for _ in range(2):
            train_step(model, params, state, batch, config, kernels)
        results.append(params)
    for key in results[0]:
        np.testing.assert_allclose(results[1][key], results[0][key], rtol=1e-10, atol=1e-13)
