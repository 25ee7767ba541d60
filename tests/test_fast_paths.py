"""The optimised forms against their plain forms (the test oracles): the table Adam with a kept
workspace, the dW layout of dense_backward, the in-place ReLU backward, take-gather."""
import numpy as np
import pytest

from engine.backend import get_backend
from engine.kernels import adam
from engine.layers.embedding import embedding_forward
from engine.layers.mlp import dense_backward, mlp_backward, mlp_forward, relu_backward

NUMPY, CPU = get_backend("numpy"), get_backend("cpu")


@pytest.mark.parametrize("clip_absent,absent_ratio", [(False, 0.5), (True, 0.0), (True, 0.5)])
def test_table_adam_with_kept_workspace_equals_reference_over_steps(clip_absent, absent_ratio):
    rng = np.random.default_rng(0)
    V, K = 50, 3
    table = rng.normal(size=(V, K))
    state_ref = [table.copy(), np.zeros_like(table), np.zeros_like(table)]
    state_fast = [table.copy(), np.zeros_like(table), np.zeros_like(table)]
    fast = adam.TableAdam()
    for step in range(4):
        ids = np.unique(rng.integers(0, V, 20 + step))                    # a different U each step
        rows = rng.normal(size=(ids.size, K))
        lr_t = 1e-2 * (1 - 0.999 ** (step + 1)) ** 0.5 / (1 - 0.9 ** (step + 1))
        args = (ids, rows, 0.3, clip_absent, absent_ratio, 1e-3, lr_t, 0.9, 0.999, 1e-7)
        adam.adam_table_numpy(*state_ref, *args)
        fast(*state_fast, *args)
        assert np.all(fast._position == -1)                               # left clean for the next call
        for want, got in zip(state_ref, state_fast):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    small = np.zeros((7, K))                                              # a smaller table reuses the map
    fast(small, np.zeros_like(small), np.zeros_like(small), np.array([2]), np.ones((1, K)),
         0.0, False, 0.0, 0.0, 1e-2, 0.9, 0.999, 1e-7)
    assert small[2, 0] < 0 and np.all(small[[0, 1, 3, 4, 5, 6]] == 0)


def test_dense_backward_layout_and_inplace_relu_equal_plain_forms():
    rng = np.random.default_rng(1)
    x, W, dy = rng.normal(size=(9, 4)), rng.normal(size=(4, 5)), rng.normal(size=(9, 5))
    dx, dW, db = dense_backward(dy, (x, W), None, CPU)
    np.testing.assert_array_equal(dx, dy @ W.T)
    np.testing.assert_allclose(dW, x.T @ dy, rtol=1e-13)
    np.testing.assert_array_equal(db, dy.sum(axis=0))
    y = np.maximum(x, 0)                                                  # the ReLU's output
    plain = dy[:, :4] * (x > 0)
    np.testing.assert_array_equal(relu_backward(dy[:, :4], y), plain)
    owned = dy[:, :4].copy()
    assert relu_backward(owned, y, out=owned) is owned
    np.testing.assert_array_equal(owned, plain)


def test_mlp_backward_leaves_the_callers_gradient_alone():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 3))
    Ws, bs = [rng.normal(size=(3, 4)), rng.normal(size=(4, 2))], [np.zeros(4), np.zeros(2)]
    h, caches = mlp_forward(x, Ws, bs, 0.0, None, CPU)
    dh = rng.normal(size=h.shape)
    kept = dh.copy()
    mlp_backward(dh, caches, CPU)
    np.testing.assert_array_equal(dh, kept)


def test_take_gather_repeats_rows_like_fancy_indexing():
    table = np.arange(12.0).reshape(6, 2)
    ids = np.array([[0, 5, 5], [2, 2, 0]])
    out, shape = embedding_forward(table, ids)
    np.testing.assert_array_equal(out, table[ids])
    assert shape == ids.shape


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_fused_fm_kernels_equal_plain_forms(dtype, rtol):
    from engine.layers.fm import fm_backward, fm_backward_numpy, fm_forward, fm_forward_numpy

    rng = np.random.default_rng(3)
    emb = rng.normal(size=(37, 6, 4)).astype(dtype)
    dout = rng.normal(size=37).astype(dtype)
    wide = rng.normal(size=(37, 6 * 4 + 3)).astype(dtype)
    add = wide[:, :24].reshape(37, 6, 4)                      # a strided view, as DeepFM passes
    out, cache = fm_forward(emb, CPU)
    out_numpy, cache_numpy = fm_forward_numpy(emb)
    assert out.dtype == dtype and cache[1].dtype == dtype
    np.testing.assert_allclose(out, out_numpy, rtol=rtol, atol=rtol * np.abs(out_numpy).max())
    np.testing.assert_allclose(cache[1], cache_numpy[1], rtol=rtol, atol=rtol)
    for extra in (None, add):
        got = fm_backward(dout, cache, extra, CPU)
        want = fm_backward_numpy(dout, cache_numpy, add=extra)
        assert got.dtype == dtype and got.shape == emb.shape
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())
    # `add` is really added (a kernel that dropped it would still pass the None case)
    assert np.abs(fm_backward(dout, cache, None, CPU) - fm_backward(dout, cache, add, CPU)).max() > 0.1


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_fused_bias_relu_kernels_equal_plain_forms(dtype, rtol):
    from engine.kernels.dense import bias_relu_cpu, relu_mask_bias_grad_cpu

    rng = np.random.default_rng(4)
    pre = rng.normal(size=(5000, 7)).astype(dtype)          # more rows than one row block
    b = rng.normal(size=7).astype(dtype)
    y = bias_relu_cpu(pre.copy(), b)
    np.testing.assert_array_equal(y, np.maximum(pre + b, 0))
    assert (y == 0).mean() > 0.2                              # the ReLU really cut some
    dy = rng.normal(size=(5000, 7)).astype(dtype)
    want = dy * (y > 0)
    out = np.empty_like(dy)
    db = relu_mask_bias_grad_cpu(dy, y, out)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_allclose(db, want.sum(axis=0), rtol=rtol, atol=rtol)
    in_place = dy.copy()
    relu_mask_bias_grad_cpu(in_place, y, in_place)        # out may be dy itself
    np.testing.assert_array_equal(in_place, want)


def test_head_outer_product_equals_the_gemm():
    rng = np.random.default_rng(5)
    for dtype in (np.float64, np.float32):
        x, W, dy = (rng.normal(size=s).astype(dtype) for s in ((33, 7), (7, 1), (33, 1)))
        dx, dW, db = dense_backward(dy, (x, W), None, CPU)
        assert dx.dtype == dtype and dx.shape == x.shape
        np.testing.assert_array_equal(dx, dy @ W.T)                      # one product per entry: exact
        np.testing.assert_allclose(dW, x.T @ dy, rtol=1e-5 if dtype == np.float32 else 1e-13)
