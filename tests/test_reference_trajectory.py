"""What lets a run follow the reference train.py step by step: the warm-up counted as it counts it,
Keras's clipped cross-entropy (--loss-form keras) and TF's float32 optimizer constants. The Keras and
TF formulas are transcribed here op by op from TF 2.4 (keras/backend.py binary_crossentropy,
clip_ops.clip_by_value, the Minimum/Maximum/Log/Sigmoid gradients, PolynomialDecay), independently
of engine/layers/loss.py and engine/optim.py."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from engine import train
from engine.layers import loss
from engine.optim import (AdamState, keras_adam_config, tf_float32, warmup_lr, warmup_lr_float32,
                          warmup_updates)
from engine.step import StepConfig, optimizer_constants, train_step
from models import ModelConfig, Schema, build_model
from validate.audit.gradcheck import elementwise_rel_error, numerical_grad

EPS = 1e-7


# ---------------------------------------------------------------------------------------------
# the warm-up's length and its values


@pytest.mark.parametrize("rows,bs,warmup,updates", [
    (180, 32, 2.0, 10),          # int(180 / 32) = 5 whole batches an epoch (the epoch trains 6)
    (3_599_999, 131_072, 1.0, 27),   # the main job: the built-in set's train split at batch 131072
    (3_599_999, 131_072, 0.5, 13),   # int(0.5 * 27)
    (4096, 1024, 1.0, 4),        # bs divides N: both counts agree
    (1800, 1500, 0.5, 0),        # int(0.5 * 1): no warm-up
])
def test_warmup_is_counted_in_whole_batches_as_the_reference(rows, bs, warmup, updates):
    assert warmup_updates(warmup, rows, bs) == updates


def keras_polynomial_decay(step: int, decay_steps: int, end: float, dtype):
    """PolynomialDecay(1e-8, decay_steps, end, power=1) at `step`, op by op in `dtype`."""
    initial = dtype(1e-8)
    end = dtype(end)
    global_step = min(dtype(step), dtype(decay_steps))
    p = global_step / dtype(decay_steps)
    return (initial - end) * ((dtype(1.0) - p) ** dtype(1.0)) + end


@pytest.mark.parametrize("lr", [8e-4, 90.5096e-4, 1e-4])
def test_warmup_lr_is_keras_polynomial_decay_from_the_first_step_to_the_end(lr):
    W = 27
    for step in (0, 1, 13, 26, 27, 28, 500):
        expected = float(keras_polynomial_decay(step, W, lr, np.float64))
        # the same line; float64 rounding of (1e-8 - lr) + lr is at lr * 1e-16
        assert warmup_lr(lr, step, W) == pytest.approx(expected, rel=1e-14, abs=1e-15 * lr), step
        # in float32, as TF evaluates it: bitwise
        assert warmup_lr_float32(lr, step, W) == float(keras_polynomial_decay(step, W, lr, np.float32)), step
    assert warmup_lr(lr, 0, W) == 1e-8                    # the first update uses 1e-8
    assert warmup_lr(lr, W, W) == lr and warmup_lr(lr, W + 5, W) == lr      # the end point is lr itself
    assert warmup_lr_float32(lr, W, W) == tf_float32(lr)
    # TF's float32 first value is not 1e-8 itself: (1e-8 - lr) + lr rounds in float32
    assert warmup_lr_float32(lr, 0, W) == float((np.float32(1e-8) - np.float32(lr)) + np.float32(lr))


def _dataset_of_180_training_rows(tmp_path):
    from dataio.meta import load_meta
    from dataio.synthetic import generate

    data = generate(tmp_path / "d180", rows=200, seed=3, min_vocab=3, max_vocab=20)
    assert load_meta(data)["splits"]["train"]["rows"] == 180
    return str(data)


def test_a_run_warms_up_over_the_reference_count_records_the_loss_form_and_resumes_as_started(tmp_path):
    data = _dataset_of_180_training_rows(tmp_path)
    out = tmp_path / "run"
    result = CliRunner().invoke(train.main, ["--data", data, "--model", "lr", "--bs", "32", "--warmup", "2",
                                             "--epoch", "1", "--max-steps", "2", "--loss-form", "keras",
                                             "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "config.json").read_text())
    assert saved["loss_form"] == "keras" and saved["step_config"]["keras_constants"] is True
    assert saved["step_config"]["warmup_updates"] == 10       # int(2 * int(180 / 32)), not 2 * ceil = 12
    assert "loss form keras" in result.output
    # the default, and an unknown form refused on the command line
    assert train.RunConfig.__dataclass_fields__["loss_form"].default == "exact"
    refused = CliRunner().invoke(train.main, ["--data", data, "--loss-form", "tf", "--out", str(tmp_path / "x")])
    assert refused.exit_code != 0 and "--loss-form" in refused.output
    # a resumed run keeps the warm-up it was started with; one started by code that counted
    # 2 * ceil(180 / 32) = 12 updates continues with 12
    resumed = CliRunner().invoke(train.main, ["--resume", "--out", str(out), "--max-steps", "3"])
    assert resumed.exit_code == 0, resumed.output
    assert "recorded warm-up" not in resumed.output
    saved["step_config"]["warmup_updates"] = 12
    (out / "config.json").write_text(json.dumps(saved))
    resumed = CliRunner().invoke(train.main, ["--resume", "--out", str(out), "--max-steps", "4"])
    assert resumed.exit_code == 0, resumed.output
    assert "keeping the run's recorded warm-up of 12 updates (counted now: 10)" in resumed.output
    assert json.loads((out / "config.json").read_text())["step_config"]["warmup_updates"] == 12


# ---------------------------------------------------------------------------------------------
# Keras's binary cross-entropy on probabilities


def keras_binary_crossentropy(z, y):
    """TF 2.4's graph for DeepCTR's output sigmoid(z) -> reshape -> binary_crossentropy
    (from_logits=False, SUM_OVER_BATCH_SIZE), forward and backward op by op. -> (loss, dloss/dz)."""
    dtype = z.dtype.type
    eps = dtype(EPS)
    B = z.shape[0]
    p = dtype(1.0) / (dtype(1.0) + np.exp(-z))                 # Sigmoid
    t_min = np.minimum(p, dtype(1.0) - eps)                     # clip_by_value: Minimum ...
    t_max = np.maximum(t_min, eps)                              # ... then Maximum
    log_a = np.log(t_max + eps)
    log_b = np.log(dtype(1.0) - t_max + eps)
    bce = y * log_a + (dtype(1.0) - y) * log_b
    value = np.sum(-bce) / dtype(B)
    g_bce = -np.full(B, dtype(1.0) / dtype(B), dtype=z.dtype)
    g_t_max = y * g_bce / (t_max + eps) - (dtype(1.0) - y) * g_bce / (dtype(1.0) - t_max + eps)   # Log: 1/x
    g_t_min = np.where(t_min >= eps, g_t_max, dtype(0.0))      # Maximum's gradient: greater_equal
    g_p = np.where(p <= dtype(1.0) - eps, g_t_min, dtype(0.0))  # Minimum's gradient: less_equal
    g_z = g_p * p * (dtype(1.0) - p)                            # SigmoidGrad
    return float(value), g_z


def test_keras_loss_equals_the_transcription_of_keras_inside_and_outside_the_clip():
    # |z| > 16.12 puts p outside [1e-7, 1 - 1e-7] in float64
    z = np.array([-40.0, -17.0, -16.2, -16.0, -3.0, -0.1, 0.0, 0.7, 5.0, 16.0, 16.2, 17.0, 40.0])
    for labels in (np.zeros_like(z), np.ones_like(z), (np.arange(z.size) % 2).astype(np.float64)):
        value, cache = loss.keras_bce_forward(z, labels)
        grad = loss.keras_bce_backward(cache)
        expected_value, expected_grad = keras_binary_crossentropy(z, labels)
        assert value == pytest.approx(expected_value, rel=1e-14)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-13, atol=1e-300)
        clipped = np.abs(z) > 16.12
        assert np.all(grad[clipped] == 0.0) and np.all(grad[~clipped] != 0.0)
    # a confidently wrong sample still costs -log(2e-7) but no longer trains the model
    value, cache = loss.keras_bce_forward(np.array([40.0]), np.array([0.0]))
    assert value == pytest.approx(-np.log(1.0 - (1.0 - EPS) + EPS), rel=1e-9)
    assert loss.keras_bce_backward(cache)[0] == 0.0
    # the exact loss keeps training it
    assert loss.bce_with_logits_backward(loss.bce_with_logits_forward(np.array([40.0]), np.array([0.0]))[1])[0] > 0.99


def test_keras_loss_in_float32_passes_the_gradient_at_the_clip_bound_itself():
    # in float32, sigmoid(16) rounds to 1 - 1e-7 exactly (the bound; the gradient passes), sigmoid(17) to 1
    z = np.array([16.0, 17.0, -0.5], dtype=np.float32)
    y = np.array([0.0, 0.0, 1.0], dtype=np.float32)
    p = loss.sigmoid(z)
    assert p[0] == np.float32(1.0) - np.float32(EPS) and p[1] == np.float32(1.0)
    value, cache = loss.keras_bce_forward(z, y)
    grad = loss.keras_bce_backward(cache)
    expected_value, expected_grad = keras_binary_crossentropy(z, y)
    assert grad.dtype == np.float32 and grad[0] != 0.0 and grad[1] == 0.0
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-6)
    assert value == pytest.approx(expected_value, rel=1e-6)


def test_keras_loss_backward_matches_finite_differences_where_it_is_differentiable():
    rng = np.random.default_rng(4)
    z = rng.normal(size=32) * 4.0                     # |z| < 16: no sample clipped
    assert np.abs(z).max() < 16.0
    y = (rng.random(32) < 0.4).astype(np.float64)
    analytic = loss.keras_bce_backward(loss.keras_bce_forward(z, y)[1])
    numeric = numerical_grad(lambda: loss.keras_bce_forward(z, y)[0], z)
    assert elementwise_rel_error(analytic, numeric) < 1e-7


def test_a_model_trains_on_the_loss_form_it_is_built_with():
    from dataio.schema import Batch

    schema = Schema(vocab_sizes=(4, 3), num_dense=2)
    batch = Batch(np.array([[0, 1], [3, 2], [1, 0]], dtype=np.int32), np.full((3, 2), 0.5), np.array([1.0, 0.0, 1.0]))
    exact = build_model("wdl", schema, ModelConfig(embed_dim=2, dnn_hidden=(3,), dtype="float64"))
    keras = build_model("wdl", schema, ModelConfig(embed_dim=2, dnn_hidden=(3,), dtype="float64", loss_form="keras"))
    params = exact.init_params(5)
    params["bias"][:] = 40.0                           # every p saturates: Keras's gradient is zero
    from engine.backend import get_backend

    kernels = get_backend("numpy")
    _, keras_grads = keras.loss(params, batch, kernels)
    _, exact_grads = exact.loss(params, batch, kernels)
    assert np.all(keras_grads["bias"] == 0.0) and abs(exact_grads["bias"][0]) > 0.3
    with pytest.raises(ValueError, match="unknown loss form"):
        build_model("wdl", schema, ModelConfig(loss_form="tf"))


# ---------------------------------------------------------------------------------------------
# TF's float32 optimizer constants


def test_keras_constants_are_tf_float32_hyperparameters():
    config = StepConfig(lr=90.5096e-4, lr_embed=1e-4, keras_constants=True)
    for dtype, epsilon in (("float32", float(np.float32(1e-7))), ("float64", 1e-7)):
        lr, lr_embed, adam = optimizer_constants(config, np.dtype(dtype))
        assert lr == float(np.float32(90.5096e-4)) and lr != 90.5096e-4
        assert lr_embed == float(np.float32(1e-4))
        assert (adam.beta1, adam.beta2) == (float(np.float32(0.9)), float(np.float32(0.999)))
        assert adam.epsilon == epsilon
    assert optimizer_constants(StepConfig(lr=90.5096e-4), np.dtype("float32"))[0] == 90.5096e-4
    assert keras_adam_config("float64").beta1 != 0.9


def test_a_step_with_keras_constants_is_a_step_with_the_float32_values():
    from dataio.schema import Batch

    schema = Schema(vocab_sizes=(5, 4), num_dense=1)
    model = build_model("deepfm", schema, ModelConfig(embed_dim=3, dnn_hidden=(4,), dtype="float64",
                                                      init_stddev=0.1, loss_form="keras"))
    batch = Batch(np.array([[0, 1], [4, 3], [0, 2], [2, 1]], dtype=np.int32), np.full((4, 1), 0.25),
                  np.array([1.0, 0.0, 0.0, 1.0]))
    from engine.backend import get_backend

    kernels = get_backend("numpy")
    keras = StepConfig(lr=7e-3, lr_embed=3e-3, l2=1e-3, clip=1.0, bound=1e-5, warmup_updates=3,
                       keras_constants=True)
    # the same step spelled out: float32-rounded values, the float32 warm-up, float64 epsilon
    spelled = StepConfig(lr=tf_float32(7e-3), lr_embed=tf_float32(3e-3), l2=1e-3, clip=1.0, bound=1e-5,
                         warmup_updates=3, adam=keras_adam_config("float64"))
    runs = []
    for config in (keras, spelled):
        params = model.init_params(2)
        state = AdamState.zeros_like(params, np)
        first = train_step(model, params, state, batch, config, kernels)["lr"]
        after_one = {name: value.copy() for name, value in params.items()}
        second = train_step(model, params, state, batch, config, kernels)["lr"]
        runs.append((after_one, params, [first, second]))
    (keras_one, keras_two, keras_lrs), (spelled_one, spelled_two, spelled_lrs) = runs
    assert keras_lrs == [warmup_lr_float32(7e-3, t, 3) for t in range(2)]
    assert spelled_lrs == [warmup_lr(tf_float32(7e-3), t, 3) for t in range(2)]
    # after one step the tables (lr_embed, no warm-up) agree bitwise; the weights differ only by the
    # warm-up's float32 rounding
    for name in ("embed.table", "linear.table"):
        np.testing.assert_array_equal(keras_one[name], spelled_one[name])
    for name in keras_two:
        np.testing.assert_allclose(keras_two[name], spelled_two[name], rtol=1e-5, atol=1e-12)
