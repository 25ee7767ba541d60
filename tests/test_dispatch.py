"""One dispatch route: the backend table picks every kernel. Backend `numpy` runs a
full training step of every model without calling one Numba-compiled function; backend `cpu`
runs its fused kernels through the same layer code. The spy sits on the class of every `@njit`
function, so it also sees a layer that imported and called a Numba kernel directly."""
import numpy as np
import pytest
from numba.core.registry import CPUDispatcher

from engine.backend import get_backend
from engine.optim import AdamState
from engine.step import StepConfig, train_step
from models import MODELS, ModelConfig, Schema, build_model
from validate.audit.gradcheck import check_batch

CONFIG = ModelConfig(embed_dim=3, dnn_hidden=(5, 4), cross_layers=2, num_experts=2, low_rank=2,
                     init_stddev=0.3)


@pytest.fixture
def numba_calls(monkeypatch):
    """Names of the `@njit` functions called while the fixture is active."""
    calls = []

    def spy(self, *args, **kwargs):
        calls.append(self.py_func.__name__)
        return super(CPUDispatcher, self).__call__(*args, **kwargs)

    monkeypatch.setattr(CPUDispatcher, "__call__", spy, raising=False)
    return calls


def _steps(name, backend, embed_optim="dense"):
    model = build_model(name, Schema((4, 12, 1, 6), 3), CONFIG)
    params = model.init_params(7)
    state = AdamState.zeros_like(params, np)
    config = StepConfig(lr=1e-2, lr_embed=1e-2, l2=1e-3, clip=0.1, bound=1e-3, embed_optim=embed_optim)
    kernels = get_backend(backend)
    for _ in range(2):
        train_step(model, params, state, check_batch(), config, kernels)
    return model.logits(params, check_batch(), kernels)


@pytest.mark.parametrize("embed_optim", ["dense", "lazy"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_numpy_backend_calls_no_numba_function(name, embed_optim, numba_calls):
    logits = _steps(name, "numpy", embed_optim)
    assert np.all(np.isfinite(logits))
    assert numba_calls == []


def test_cpu_backend_runs_its_fused_kernels_through_the_same_layers(numba_calls):
    _steps("deepfm", "cpu")
    called = set(numba_calls)
    for kernel in ("fm_forward_cpu", "fm_backward_cpu", "bias_relu_cpu", "relu_backward_bias_grad_cpu",
                   "outer_cpu", "_index_ids_cpu", "_scatter_add_rows_cpu", "cowclip_rows_cpu", "_adam_table_cpu"):
        assert kernel in called, (kernel, sorted(called))


def test_numpy_and_cpu_backends_agree_on_a_float64_step():
    model = build_model("deepfm", Schema((4, 12, 1, 6), 3), ModelConfig(**{**CONFIG.__dict__, "dtype": "float64"}))
    results = []
    for backend in ("numpy", "cpu"):
        params = model.init_params(7)
        state = AdamState.zeros_like(params, np)
        config = StepConfig(lr=1e-2, lr_embed=1e-2, l2=1e-3, clip=0.1, bound=1e-3)
        for _ in range(2):
            train_step(model, params, state, check_batch(), config, get_backend(backend))
        results.append(params)
    for key in results[0]:
        np.testing.assert_allclose(results[1][key], results[0][key], rtol=1e-10, atol=1e-13)
