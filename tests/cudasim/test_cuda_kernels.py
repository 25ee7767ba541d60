"""The CUDA kernels, run by Numba's CUDA simulator, against the NumPy float64 reference.

Run via tests/test_cuda_simulator.py, which starts pytest on this folder with
NUMBA_ENABLE_CUDASIM=1 (it must be set before Numba is imported, so not in this process)."""
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
            adam.adam_table_reference(*ref, ids, rows, 0.6, True, 1.0, 0.01, 1e-2, 0.9, 0.999, 1e-7)
            adam.adam_table_cuda(*got, ids, rows.astype(dtype), 0.6, True, 1.0, 0.01, 1e-2, 0.9, 0.999, 1e-7)
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
