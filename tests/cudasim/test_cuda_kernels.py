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
            adam.adam_table_reference(*ref, ids, rows, 0.6, True, 1.0, 0.01, 1e-2, 0.9, 0.999, 1e-7)
            adam.adam_table_cuda(*got, ids, rows.astype(dtype), 0.6, True, 1.0, 0.01, 1e-2, 0.9, 0.999, 1e-7)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=rtol, atol=rtol * 1e-2)


def test_full_training_step_on_cuda_backend_matches_numpy_backend():
    from engine.backend import get_backend
    from engine.optim import AdamState
    from engine.step import StepConfig, train_step
    from models import ModelConfig, Schema, build_model
    from validate.audit.gradcheck import check_batch

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


# --------------------------------------------------------------------------------------------
# the fused dense-side kernels of the cuda backend, against float64 references. Each kernel
# computes in float64 from float32 inputs and rounds once, so it is within u32 |ref| (u32 = 2^-24)
# of the float64 reference computed from the same float32 inputs, plus float64 evaluation error,
# bounded here by 2^-40 times the sum of the magnitudes involved (n u64 <= 2^-40 for n < 4096).

U32, SLACK = 2.0 ** -24, 2.0 ** -40


def _assert_within(got, ref, scale):
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    bound = U32 * np.abs(ref) + SLACK * scale
    assert np.all(np.abs(got - ref) <= bound), np.max(np.abs(got - ref) / bound)


def test_fm_cuda_kernels_within_a_rounding_of_float64():
    from engine.kernels import fm

    rng = np.random.default_rng(11)
    emb = rng.normal(size=(9, 4, 3)).astype(np.float32)
    dout = rng.normal(size=9).astype(np.float32)
    add = rng.normal(size=(9, 4 * 3 + 2)).astype(np.float32)[:, :12].reshape(9, 4, 3)   # strided, as DeepFM
    out, (cached, field_sum) = fm.fm_forward_fused_cuda(emb)
    e = emb.astype(np.float64)
    fs64, sq64 = e.sum(axis=1), (e * e).sum(axis=1)
    scale = (fs64 ** 2 + sq64).sum(axis=1)
    _assert_within(out, 0.5 * (fs64 ** 2 - sq64).sum(axis=1), scale)
    _assert_within(field_sum, fs64, np.abs(e).sum(axis=1))
    for extra in (None, add):
        demb = fm.fm_backward_fused_cuda(dout, (cached, field_sum), extra)
        ref = dout[:, None, None].astype(np.float64) * (field_sum[:, None, :].astype(np.float64) - e)
        if extra is not None:
            ref = ref + extra
        _assert_within(demb, ref, np.abs(ref) + 1.0)
    assert np.abs(fm.fm_backward_fused_cuda(dout, (cached, field_sum), add)
                  - fm.fm_backward_fused_cuda(dout, (cached, field_sum))).max() > 0.1


def test_bias_relu_cuda_kernels_against_plain_forms():
    from engine.kernels import dense

    rng = np.random.default_rng(12)
    pre = rng.normal(size=(600, 5)).astype(np.float32)                 # three row blocks of 256
    b = rng.normal(size=5).astype(np.float32)
    y = dense.bias_relu_fused_cuda(pre.copy(), b)
    assert y.tobytes() == dense.bias_relu_reference(pre.copy(), b).tobytes()
    assert (y == 0).mean() > 0.2
    dy = rng.normal(size=(600, 5)).astype(np.float32)
    out = np.empty_like(dy)
    db = dense.relu_mask_bias_grad_cuda(dy, y, out)
    masked = dy * (y > 0)
    np.testing.assert_array_equal(out, masked)         # equal values (the plain form writes -0.0 for dy < 0)
    # column sums: float64 in a fixed order, rounded once (the bound of the segmented sum, d < 600)
    _assert_within(db, masked.astype(np.float64).sum(axis=0), np.abs(masked.astype(np.float64)).sum(axis=0))
    in_place = dy.copy()
    again = dense.relu_mask_bias_grad_cuda(in_place, y, in_place)
    np.testing.assert_array_equal(in_place, masked)
    assert again.tobytes() == db.tobytes()


def test_dense_weights_adam_cuda_in_one_flat_buffer():
    from engine.kernels.dense_adam import DenseWeightsAdam, adam_dense_weights_reference
    from engine.optim import AdamConfig, AdamState

    rng = np.random.default_rng(13)
    shapes = {"a.W": (4, 3), "a.b": (3,), "head.W": (3, 1), "lin": (5,)}
    l2s = [0.0, 0.0, 0.0, 0.3]
    params = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    ref_params = {k: v.astype(np.float64) for k, v in params.items()}
    state, ref_state = AdamState.zeros_like(params, np), AdamState.zeros_like(ref_params, np)
    adam, names = DenseWeightsAdam(), list(shapes)
    for step in range(3):
        grads = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
        grads["a.W"] = np.asfortranarray(grads["a.W"])                    # dW is a transposed view
        if step == 2:
            params["a.b"] = params["a.b"].copy()                           # e.g. after a checkpoint load
        lr_t = 1e-2 * (1 - 0.999 ** (step + 1)) ** 0.5 / (1 - 0.9 ** (step + 1))
        adam(params, grads, state, names, l2s, lr_t, AdamConfig())
        adam_dense_weights_reference(ref_params, {k: g.astype(np.float64) for k, g in grads.items()},
                                     ref_state, names, l2s, lr_t, AdamConfig())
        for d, ref in ((params, ref_params), (state.m, ref_state.m), (state.v, ref_state.v)):
            for k in names:
                assert d[k].shape == shapes[k] and d[k].dtype == np.float32
                # each step rounds once more: the float32 state drifts by <= u32 per step from float64
                np.testing.assert_allclose(d[k], ref[k], rtol=4 * U32 * (step + 1), atol=1e-7)
                ref[k] = d[k].astype(np.float64)                          # restart from the same inputs
        assert all(np.shares_memory(params[k], adam.w) for k in names)    # views of one flat buffer


@pytest.mark.parametrize("clip_absent, absent_ratio", [(False, 1.0), (True, 0.0), (True, 0.7)])
def test_table_adam_cuda_with_kept_position_map(clip_absent, absent_ratio):
    from engine.kernels import adam

    rng = np.random.default_rng(14)
    table = rng.normal(size=(30, 4)).astype(np.float32)
    new = [table.copy(), np.zeros_like(table), np.zeros_like(table)]
    ref = [table.astype(np.float64), np.zeros((30, 4)), np.zeros((30, 4))]
    fast = adam.TableAdamCuda()
    for step in range(3):
        ids = np.unique(rng.integers(0, 30, 8))
        rows = rng.normal(size=(ids.size, 4)).astype(np.float32)
        args = (ids, rows, 0.3, clip_absent, absent_ratio, 1e-3, 1e-2, 0.9, 0.999, 1e-7)
        fast(*new, *args)
        adam.adam_table_reference(*ref, ids, rows.astype(np.float64), *args[2:])
        assert np.all(fast._position == -1)                   # left clean for the next call
        for a, r in zip(new, ref):
            # float64 arithmetic from the same float32 inputs, rounded once
            np.testing.assert_allclose(a, r, rtol=U32 * (1 + 1e-6), atol=1e-30)
            r[...] = a                                        # restart the reference from the same bits


@pytest.mark.parametrize("name, embed_optim", [(n, "dense") for n in ("lr", "fm", "wdl", "dcn", "dcnv2", "dcnmix")]
                         + [("wdl", "lazy")])
def test_every_model_steps_alike_on_cuda_and_numpy_backends(name, embed_optim):
    """The cuda backend's fused kernels (FM, bias+ReLU, mask+bias grad, flat dense Adam, table
    Adam) against the plain forms of backend numpy, in float64, over two steps."""
    from engine.backend import get_backend
    from engine.optim import AdamState
    from engine.step import StepConfig, train_step
    from models import ModelConfig, Schema, build_model
    from validate.audit.gradcheck import check_batch

    model = build_model(name, Schema((4, 12, 1, 6), 3),
                        ModelConfig(embed_dim=3, dnn_hidden=(5, 4), cross_layers=2, num_experts=2, low_rank=2,
                                    init_stddev=0.3, dtype="float64"))
    config = StepConfig(lr=1e-2, lr_embed=1e-2, l2=1e-3, clip=0.1, bound=1e-3, embed_optim=embed_optim)
    results = []
    for backend in ("numpy", "cuda"):
        kernels = get_backend(backend)
        params = model.init_params(7)
        state = AdamState.zeros_like(params, np)
        for _ in range(2):
            train_step(model, params, state, check_batch(), config, kernels)
        results.append((params, state))
    (want, want_state), (got, got_state) = results
    for key in want:
        for a, b in ((got[key], want[key]), (got_state.m[key], want_state.m[key]),
                     (got_state.v[key], want_state.v[key])):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
