"""validate.speed.bench: the phase timers wrap the real step (same parameters after it, every wrapped
function really called, the wrappers removed afterwards), the FLOP count, and the A/B harness."""
import numpy as np
import pytest

import models.deepfm
from engine.backend import get_backend
from engine.optim import AdamState
from engine.step import StepConfig, train_step
from models import ModelConfig, Schema, build_model
from validate.speed.bench import dnn_flops
from validate.audit.gradcheck import check_batch
from validate.speed.phases import PHASES, phase_step

TINY = dict(embed_dim=3, dnn_hidden=(6, 5), cross_layers=2, init_stddev=0.3, dtype="float64")

# calls per step: gather = global_ids + 2 table lookups; scatter = one id index + 2 table
# scatter-adds; DNN forward = dnn_forward + head_forward (+ the cross network for DCN)
CALLS = {"deepfm": {"gather": 3, "fm": 2, "dnn_fwd": 2, "dnn_bwd": 2, "scatter": 3, "cowclip": 1,
                    "adam_weights": 1, "adam_tables": 1},
         "dcn": {"gather": 3, "dnn_fwd": 3, "dnn_bwd": 3, "scatter": 3, "cowclip": 1,
                 "adam_weights": 1, "adam_tables": 1}}


@pytest.mark.parametrize("name", ["deepfm", "dcn"])
def test_phase_step_times_the_real_step(name):
    model = build_model(name, Schema((4, 12, 1, 6), 3), ModelConfig(**TINY))
    config = StepConfig(lr=1e-2, lr_embed=1e-2, l2=1e-2, clip=0.05, bound=1e-3)
    kernels = get_backend("cpu")
    a, b = model.init_params(1), model.init_params(1)
    sa, sb = AdamState.zeros_like(a, np), AdamState.zeros_like(b, np)
    original = models.deepfm.embedding_forward
    for seed in range(2):
        info = train_step(model, a, sa, check_batch(seed), config, kernels)
        loss, seconds, calls = phase_step(model, b, sb, check_batch(seed), config, kernels)
        assert loss == info["loss"]
        assert calls == CALLS[name]
    for key in a:
        assert np.array_equal(b[key], a[key]), key
    assert set(seconds) == set(PHASES) and all(seconds[p] >= 0 for p in PHASES if p != "other")
    assert models.deepfm.embedding_forward is original and "global_ids" not in vars(model)


def test_dnn_flops_by_hand():
    B = 7
    deepfm = build_model("deepfm", Schema((4, 12, 1, 6), 3), ModelConfig(**TINY))
    # input width d = 4 fields * 3 + 3 dense = 15; kernels (15, 6), (6, 5), head (5, 1)
    assert dnn_flops(deepfm, B) == 6 * B * (15 * 6 + 6 * 5 + 5 * 1)
    dcn = build_model("dcn", Schema((4, 12, 1, 6), 3), ModelConfig(**TINY))
    # the head reads concat(cross output, DNN output): (15 + 5, 1)
    assert dnn_flops(dcn, B) == 6 * B * (15 * 6 + 6 * 5 + 20 * 1)
    assert dnn_flops(build_model("fm", Schema((4, 12, 1, 6), 3), ModelConfig(**TINY)), B) == 0


def test_ab_compare_pieces_compute_what_their_plain_forms_compute():
    from validate.speed.ab import ab_compare

    rows = ab_compare(batch_size=512, vocab=3000, rounds=1)
    names = [name for name, _, _, _ in rows]
    assert any("FM" in n for n in names) and any("float64" in n for n in names)
    assert any("head" in n for n in names) and len(names) == 6
    compared = [(name, difference) for name, _, _, difference in rows if not np.isnan(difference)]
    assert len(compared) == 4, rows          # gather, DNN, FM, head return arrays
    for name, difference in compared:        # float32, sums over at most 400 terms in another order
        assert difference <= 1e-5, (name, difference)
