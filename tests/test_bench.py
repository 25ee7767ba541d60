"""The bench's phase-timed step makes the same calls as the real step: same parameters after it."""
import numpy as np
import pytest

from engine.backend import get_backend
from engine.optim import AdamState
from engine.step import StepConfig, train_step
from models import ModelConfig, Schema, build_model
from validate.bench import phase_step
from validate.gradcheck import check_batch


@pytest.mark.parametrize("name", ["deepfm", "dcn"])
def test_phase_step_equals_train_step(name):
    model = build_model(name, Schema((4, 12, 1, 6), 3),
                        ModelConfig(embed_dim=3, dnn_hidden=(6, 5), cross_layers=2, init_stddev=0.3, dtype="float64"))
    config = StepConfig(lr=1e-2, lr_embed=1e-2, l2=1e-2, clip=0.05, bound=1e-3)
    kernels = get_backend("cpu")
    a, b = model.init_params(1), model.init_params(1)
    sa, sb = AdamState.zeros_like(a, np), AdamState.zeros_like(b, np)
    for seed in range(2):
        info = train_step(model, a, sa, check_batch(seed), config, kernels)
        loss, seconds = phase_step(model, b, sb, check_batch(seed), config, kernels)
        assert loss == pytest.approx(info["loss"], rel=1e-12)
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-12, atol=1e-15)
    assert {"gather", "dnn_fwd", "dnn_bwd", "scatter", "cowclip", "adam_tables"} <= set(seconds)
    assert all(v >= 0 for v in seconds.values())


def test_ab_compare_times_every_piece_against_its_plain_form():
    from validate.bench import ab_compare

    rows = ab_compare(batch_size=512, vocab=3000, rounds=1)
    names = [name for name, _, _ in rows]
    assert any("FM" in n for n in names) and any("float64" in n for n in names)
    assert any("head" in n for n in names) and len(names) == 6
    for _, plain, fast in rows:
        assert 0 < plain < 60 and 0 < fast < 60
