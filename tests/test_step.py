"""A whole training step: backends agree, L2 enters where each form says, memory stays sparse."""
import tracemalloc

import numpy as np
import pytest

from dataio.schema import Batch
from engine.backend import get_backend
from engine.optim import AdamState
from engine.step import StepConfig, apply_gradients, train_step
from models import ModelConfig, Schema, build_model
from validate.audit.gradcheck import check_batch

SMALL = ModelConfig(embed_dim=3, dnn_hidden=(6, 5), cross_layers=2, num_experts=2, low_rank=2,
                    init_stddev=0.3, dtype="float64")


@pytest.mark.parametrize("form", ["paper", "reference"])
@pytest.mark.parametrize("mode", ["dense", "lazy"])
def test_numba_cpu_step_equals_numpy_reference_step(form, mode):
    model = build_model("dcnmix", Schema((4, 12, 1, 6), 3), SMALL)
    config = StepConfig(lr=1e-2, lr_embed=1e-2, l2=1e-2, clip=0.05, bound=1e-3, clip_form=form,
                        embed_optim=mode, warmup_updates=2)
    results = []
    for name in ("numpy", "cpu"):
        kernels = get_backend(name)
        params = model.init_params(3)
        state = AdamState.zeros_like(params, np)
        for seed in range(3):
            info = train_step(model, params, state, check_batch(seed), config, kernels, audit=True)
        results.append(params)
        assert info["audit.embed.table"]["rows_clipped"] > 0   # the clip binds in this test
    for key in results[0]:
        np.testing.assert_allclose(results[1][key], results[0][key], rtol=1e-12, atol=1e-15)


def _one_update(form, l2):
    model = build_model("fm", Schema((3, 2), 0), ModelConfig(embed_dim=2, dtype="float64"))
    params = model.init_params(0)
    params["embed.table"][:] = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0], [0.0, 2.0]]
    from engine.layers.embedding import RowGrad

    grads = {k: np.zeros_like(v) for k, v in params.items()}
    grads["linear.table"] = RowGrad(np.array([0]), np.zeros((1, 1)), np.array([1]))
    grads["embed.table"] = RowGrad(np.array([0]), np.array([[0.0, 10.0]]), np.array([1]))
    state = AdamState.zeros_like(params, np)
    config = StepConfig(l2=l2, clip=1.0, bound=0.0, clip_form=form, embed_optim="lazy", lr_embed=1.0)
    apply_gradients(model, params, grads, state, config, get_backend("cpu"))
    return state.m["embed.table"][0] / 0.1  # Adam's first moment after one step is 0.1 * g


def test_l2_enters_before_the_clip_in_reference_form_and_after_in_paper_form():
    # w = (1, 0), g = (0, 10), threshold 1 * max(1 * ||w||, 0) = 1, lambda = 0.5 -> 2 lambda w = (1, 0)
    reference = _one_update("reference", 0.5)   # clip((1, 10)) to norm 1
    paper = _one_update("paper", 0.5)           # clip((0, 10)) to (0, 1), then + (1, 0)
    np.testing.assert_allclose(reference, np.array([1.0, 10.0]) / np.hypot(1, 10), rtol=1e-12)
    np.testing.assert_allclose(paper, [1.0, 1.0], rtol=1e-12)


def test_deepfm_at_batch_131072_never_allocates_a_vocab_by_dim_array():
    # Criteo-shaped: 26 sparse fields of dim 10, 13 dense; tables of 60M rows (2.4 GB in float32,
    # zero-filled pages cost nothing until touched); the traced peak of a forward and backward
    # must stay below the size of one [V, K] table
    vocab = (2_307_692,) * 26
    schema = Schema(vocab, 13)
    model = build_model("deepfm", schema, ModelConfig())
    V, K = schema.total_rows, 10
    small = build_model("deepfm", Schema((1,) * 26, 13), ModelConfig()).init_params(0)
    params = {k: v for k, v in small.items() if not k.endswith("table")}
    params["embed.table"] = np.zeros((V, K), dtype=np.float32)
    params["linear.table"] = np.zeros((V, 1), dtype=np.float32)
    rng = np.random.default_rng(0)
    B = 131072
    batch = Batch(np.minimum(rng.zipf(1.2, (B, 26)), vocab[0]).astype(np.int32) - 1,
                  rng.random((B, 13), dtype=np.float32), (rng.random(B) < 0.25).astype(np.float32))
    kernels = get_backend("cpu")
    tracemalloc.start()
    try:
        loss, grads = model.loss(params, batch, kernels)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.isfinite(loss)
    assert grads["embed.table"].rows.shape[1] == K and grads["embed.table"].rows.dtype == np.float32
    assert peak < V * K * 4, f"peak {peak / 1e9:.2f} GB >= one table {V * K * 4 / 1e9:.2f} GB"
