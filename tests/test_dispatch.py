"""One dispatch route: the backend table picks every kernel. Backend `numpy` runs a
full training step of every model without calling one Numba-compiled function; backend `cpu`
runs its fused kernels through the same layer code (that the two end a step alike:
tests/test_step.py). The spy sits on the class of every `@njit`
function, so it also sees a layer that imported and called a Numba kernel directly."""
import os
import subprocess
import sys

import numpy as np
import pytest
from numba.core.registry import CPUDispatcher

from engine.backend import get_backend
from engine.optim import AdamState
from engine.step import StepConfig, train_step
from models import MODELS
from validate.audit.gradcheck import check_batch
from tests.conftest import REPO_ROOT, tiny_model


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
    model = tiny_model(name, dtype="float32")
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
    for kernel in ("_fm_forward_cpu", "_fm_backward_cpu", "_bias_relu_cpu", "relu_mask_bias_grad_cpu",
                   "outer_cpu", "_index_ids_cpu", "_scatter_add_rows_cpu", "_cowclip_rows_cpu", "_adam_table_cpu"):
        assert kernel in called, (kernel, sorted(called))



LAYER_MODULES = sorted(f"engine.layers.{path.stem}" for path in (REPO_ROOT / "engine" / "layers").glob("*.py")
                       if path.stem != "__init__")


@pytest.mark.parametrize("module", LAYER_MODULES)
def test_importing_a_layer_loads_no_numba_cuda(module):
    """A layer is array math handed its kernels; importing it must not start Numba's CUDA
    machinery (0.7 s, and a CUDA driver probe). A fresh interpreter sees the import alone."""
    probe = f"import sys, {module}; print('numba.cuda' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False"], module


def test_the_layer_import_check_sees_a_module_that_loads_numba_cuda():
    result = subprocess.run([sys.executable, "-c", "import sys, engine.backend; print('numba.cuda' in sys.modules)"],
                            cwd=REPO_ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=120)
    assert result.stdout.split() == ["True"], result.stderr[-2000:]
    assert len(LAYER_MODULES) >= 6
