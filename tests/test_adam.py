"""Adam (weights, and tables in dense and lazy modes) against a plain float64 transcription."""
import numpy as np
import pytest

from engine.backend import get_backend
from engine.optim import AdamConfig, adam_weight_update, bias_corrected_lr, warmup_lr
from tests.test_cowclip import BACKENDS


def keras_adam(w, m, v, g, lr, t, b1=0.9, b2=0.999, eps=1e-7):
    """One Keras Adam update, written out element by element."""
    w, m, v = w.copy(), m.copy(), v.copy()
    lr_t = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    for i in np.ndindex(w.shape):
        m[i] = b1 * m[i] + (1 - b1) * g[i]
        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
        w[i] = w[i] - lr_t * m[i] / (np.sqrt(v[i]) + eps)
    return w, m, v


def test_dense_weight_adam_matches_transcription_over_steps():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3))
    m, v = np.zeros_like(w), np.zeros_like(w)
    w_ref, m_ref, v_ref = w.copy(), m.copy(), v.copy()
    for t in range(1, 6):
        g = rng.normal(size=w.shape)
        adam_weight_update(w, g, m, v, bias_corrected_lr(1e-2, t, AdamConfig()), AdamConfig())
        w_ref, m_ref, v_ref = keras_adam(w_ref, m_ref, v_ref, g, 1e-2, t)
    np.testing.assert_allclose(w, w_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(v, v_ref, rtol=1e-12, atol=1e-15)


# batches of ids per step; row 5 skips steps 2 and 3, row 0 is in every batch, row 7 never appears
STEP_IDS = [np.array([0, 5, 2]), np.array([0, 1]), np.array([0, 3, 2]), np.array([5, 0])]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["dense", "lazy"])
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_table_adam_matches_transcription(backend, mode, dtype, rtol):
    kernels = get_backend(backend)
    rng = np.random.default_rng(1)
    V, K, lr, l2 = 8, 3, 1e-2, 0.05
    table = rng.normal(size=(V, K))
    m, v = np.zeros_like(table), np.zeros_like(table)
    ref = (table.copy(), m.copy(), v.copy())
    table, m, v = table.astype(dtype), m.astype(dtype), v.astype(dtype)
    for t, ids in enumerate(STEP_IDS, start=1):
        rows = rng.normal(size=(ids.size, K))
        w_ref, m_ref, v_ref = ref
        if mode == "dense":   # every row: its batch gradient if present, else 2 * l2 * w
            g = 2 * l2 * w_ref
            g[ids] = rows
            ref = keras_adam(w_ref, m_ref, v_ref, g, lr, t)
        else:                 # only the batch's rows
            w2, m2, v2 = keras_adam(w_ref[ids], m_ref[ids], v_ref[ids], rows, lr, t)
            ref = (w_ref.copy(), m_ref.copy(), v_ref.copy())
            ref[0][ids], ref[1][ids], ref[2][ids] = w2, m2, v2
        lr_t = lr * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        if mode == "dense":
            kernels.adam_table(table, m, v, ids, rows.astype(dtype), l2, False, 0.0, 0.0, lr_t, 0.9, 0.999, 1e-7)
        else:
            kernels.adam_rows(table, m, v, ids, rows.astype(dtype), lr_t, 0.9, 0.999, 1e-7)
    np.testing.assert_allclose(table, ref[0], rtol=rtol, atol=rtol * 1e-2)
    np.testing.assert_allclose(m, ref[1], rtol=rtol, atol=rtol * 1e-2)
    untouched = 7
    if mode == "lazy":
        assert np.array_equal(m[untouched], np.zeros(K))      # never in a batch: never updated
    else:
        assert not np.array_equal(m[untouched], np.zeros(K))  # decays toward its L2 gradient


def test_dense_table_clips_absent_rows_as_seen_once():
    # with 2 * l2 > r the L2-only gradient of an absent row exceeds r * ||w|| and must be clipped
    kernels = get_backend("cpu")
    table = np.array([[3.0, 4.0], [1.0, 0.0]])
    m, v = np.zeros_like(table), np.zeros_like(table)
    kernels.adam_table(table, m, v, np.array([1]), np.zeros((1, 2)), 1.0, True, 0.5, 0.0, 1.0, 0.9, 0.999, 1e-7)
    # absent row 0: g = 2 * 1.0 * w (norm 10), threshold 0.5 * 5 = 2.5 -> g scaled to norm 2.5
    np.testing.assert_allclose(m[0], 0.1 * np.array([1.5, 2.0]))


def test_warmup_is_the_reference_linear_schedule():
    assert warmup_lr(1.0, 0, 10) == pytest.approx(1e-8)
    assert warmup_lr(1.0, 5, 10) == pytest.approx(0.5, rel=1e-6)
    assert warmup_lr(1.0, 10, 10) == 1.0 and warmup_lr(1.0, 3, 0) == 1.0
