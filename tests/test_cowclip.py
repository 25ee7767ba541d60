"""CowClip (both forms, every CPU backend) against a direct float64 transcription of Algorithm 1."""
import math
import os

import numpy as np
import pytest

from engine.backend import get_backend
from engine.cowclip import COWCLIP, clip_audit, clip_constants, clip_rows, clip_scale, clip_scales
from engine.layers.embedding import RowGrad, embedding_backward, index_batch_ids


def transcription(tables, ids, occurrence_grads, form, r, bound):
    """Algorithm 1 as written, one field and one id at a time, in float64.

    tables: list of (V_f, K); ids (B, F); occurrence_grads (B, F, K): d loss / d emb[b, f].
    -> {(f, k): (clipped gradient row, scale min(1, clip / ||g||))}."""
    B, F, K = occurrence_grads.shape
    clipped = []
    for f in range(F):
        for k in sorted(set(ids[:, f].tolist())):
            rows = ids[:, f] == k
            g = occurrence_grads[rows, f].sum(axis=0)          # summed gradient of id k
            cnt = int(rows.sum())
            w_norm = math.sqrt(sum(float(x) ** 2 for x in tables[f][k]))
            if form == "paper":
                clip = cnt * max(r * w_norm, bound)
            else:  # reference clip.py: r * cnt * max(||w||, r * sqrt(K) * bound)
                clip = r * cnt * max(w_norm, r * math.sqrt(K) * bound)
            g_norm = math.sqrt(sum(float(x) ** 2 for x in g))
            scale = 1.0 if g_norm == 0 else min(1.0, clip / g_norm)
            clipped.append(((f, k), (g * scale, scale)))
    return dict(clipped)


def make_case(seed, dtype):
    rng = np.random.default_rng(seed)
    vocab, K, B = [3, 50, 8], 4, 64
    tables = [rng.normal(0, 0.1, (v, K)) for v in vocab]
    tables[1][7] = 0.0                                       # a zero weight row: the floor binds
    ids = np.stack([rng.integers(0, 3, B),                   # ids repeated many times
                    rng.permutation(50)[:B % 50].tolist() + rng.integers(0, 50, B - B % 50).tolist(),
                    rng.integers(0, 8, B)], axis=1)
    ids[:5, 1] = [7, 11, 12, 13, 14]
    grads = rng.normal(0, 1, (B, 3, K)) * rng.choice([1e-4, 1.0, 1e3], size=(B, 3, 1))  # far below/above
    grads[ids[:, 2] == 3, 2] = 0.0                           # an id whose gradient row is zero
    return tables, ids, grads.astype(dtype), [t.astype(dtype) for t in tables]


# "cuda" runs only under NUMBA_ENABLE_CUDASIM=1, which tests/test_cuda_simulator.py sets in a child process
BACKENDS = ["numpy", "cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    os.environ.get("NUMBA_ENABLE_CUDASIM") != "1", reason="CUDA kernels run in the simulator child process"))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("form", ["paper", "reference"])
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_cowclip_matches_transcription(backend, form, dtype, rtol):
    kernels = get_backend(backend)
    tables64, ids, grads, tables = make_case(0, dtype)
    r, bound = 0.5, 1e-2
    expected = transcription(tables64, ids, grads.astype(np.float64), form, r, bound)

    offsets = np.array([0, 3, 53])
    table = np.concatenate(tables)                            # the engine's shared table
    global_ids = ids + offsets
    index = index_batch_ids(global_ids, table.shape[0], kernels)
    grad = embedding_backward(grads, index, kernels)
    before = grad.rows.copy()
    ratio, floor = clip_constants(form, r, bound, table.shape[1])
    scales = kernels.to_host(clip_rows(COWCLIP, grad, table, offsets, kernels, ratio, floor))

    assert len(expected) == grad.ids.shape[0]
    for u, row in enumerate(grad.ids):
        f = int(np.searchsorted(offsets, row, side="right") - 1)
        want, want_scale = expected[(f, int(row - offsets[f]))]
        # relative to the row's norm: a float32 sum of terms of 1e3 and 1e-4 cancels elementwise
        error = np.linalg.norm(grad.rows[u].astype(np.float64) - want)
        assert error <= rtol * np.linalg.norm(want) or (error == 0.0), (u, grad.rows[u], want)
        # the scale is min(1, clip / ||g||) of the transcription (||g|| of the engine's own row sum)
        assert scales[u] == pytest.approx(want_scale, rel=rtol), (u, scales[u], want_scale)
        if want_scale == 1.0:                               # a row that needs no clip is left as it was
            assert np.array_equal(grad.rows[u], before[u]), u
    assert (scales < 1).any() and (scales == 1).any()       # the case has rows on both sides
    # the zero weight row: the floor alone sets its threshold, cnt * floor
    zero_weight_row = 3 + 7
    u = int(np.flatnonzero(grad.ids == zero_weight_row)[0])
    g_norm = np.linalg.norm(before[u].astype(np.float64))
    want_scale = min(1.0, int(grad.counts[u]) * floor / g_norm)
    assert want_scale < 1.0 and scales[u] == pytest.approx(want_scale, rel=rtol)
    assert np.isfinite(grad.rows).all()


def test_zero_gradient_row_stays_zero_without_nan():
    kernels = get_backend("cpu")
    table = np.zeros((4, 3))
    grad = RowGrad(np.array([0, 2]), np.array([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0]]), np.array([2, 1]))
    scales = clip_rows(COWCLIP, grad, table, [0], kernels, 1.0, 0.0)
    assert grad.rows[0].tolist() == [0.0, 0.0, 0.0]
    assert np.isfinite(scales).all() and grad.rows[1].tolist() == [0.0, 0.0, 0.0]  # threshold 0 binds


def test_clip_binds_on_a_constructed_case_and_not_where_it_should_not():
    kernels = get_backend("cpu")
    table = np.array([[3.0, 4.0], [3.0, 4.0]])               # ||w|| = 5
    # row 0: cnt 2, threshold 2 * max(0.1 * 5, 0.01) = 1, ||g|| = 10 -> scaled to norm 1
    # row 1: cnt 1, threshold 0.5, ||g|| = 0.25 -> unchanged
    grad = RowGrad(np.array([0, 1]), np.array([[6.0, 8.0], [0.15, 0.2]]), np.array([2, 1]))
    scales = clip_rows(COWCLIP, grad, table, [0], kernels, 0.1, 0.01)
    np.testing.assert_allclose(scales, [0.1, 1.0])
    np.testing.assert_allclose(grad.rows, [[0.6, 0.8], [0.15, 0.2]])


def test_vectorised_clip_scales_equal_the_scalar_rule_row_by_row():
    grad_norm = np.array([0.0, 10.0, 0.25, 3.0, 1e-300, 5.0])
    weight_norm = np.array([5.0, 5.0, 5.0, 0.0, 0.0, 2.0])
    counts = np.array([1, 2, 1, 4, 1, 3])
    got = clip_scales(grad_norm, weight_norm, counts, 0.1, 0.01)
    want = [clip_scale(g, w, c, 0.1, 0.01) for g, w, c in zip(grad_norm, weight_norm, counts)]
    assert got.tolist() == want
    # worked by hand: row 1 threshold 2 * max(0.5, 0.01) = 1 -> 1/10; row 3 threshold 4 * 0.01 -> 0.04/3
    assert want[:4] == [1.0, 0.1, 1.0, 0.04 / 3.0] and want[4] == 1.0
    assert clip_scales(grad_norm, weight_norm, 1, 0.1, 0.01).tolist() == [
        clip_scale(g, w, 1.0, 0.1, 0.01) for g, w in zip(grad_norm, weight_norm)]


def test_reference_form_scales_bound_by_r_sqrt_dim():
    ratio, floor = clip_constants("reference", 2.0, 1e-5, 16)
    assert ratio == 2.0 and floor == pytest.approx(2.0 * 2.0 * 4.0 * 1e-5)
    assert clip_constants("paper", 2.0, 1e-5, 16) == (2.0, 1e-5)
    with pytest.raises(ValueError):
        clip_constants("other", 1.0, 0.0, 4)


def test_audit_counts_clipped_rows_by_frequency():
    kernels = get_backend("cpu")
    table = np.ones((6, 2))
    grad = RowGrad(np.array([0, 1, 4]), np.array([[100.0, 0], [1e-3, 0], [100.0, 0]]), np.array([1, 1, 40]))
    scales = clip_rows(COWCLIP, grad, table, [0], kernels, 1.0, 0.0)
    audit = clip_audit(grad, table, scales, np.array([0, 3]), ("A", "B"), kernels.to_host)
    assert audit["rows"] == 3 and audit["rows_clipped"] == 2
    assert audit["by_count"]["1"]["ids"] == 2 and audit["by_count"]["1"]["clipped_fraction"] == 0.5
    assert audit["by_field"]["B"]["ids"] == 1 and audit["by_field"]["A"]["clipped"] == 1
