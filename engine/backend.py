"""The one place that picks the array module `xp` and every kernel, fused or plain.

Backends:
    numpy  NumPy arrays, the plain NumPy forms of every kernel, end to end: no Numba function
           runs (the test oracle; slow; tests/test_dispatch.py)
    cpu    NumPy arrays, Numba `@njit` kernels
    cuda   CuPy arrays, Numba `@cuda.jit` kernels (also runs under NUMBA_ENABLE_CUDASIM=1,
           on NumPy arrays, for tests)

Layers and models never choose a kernel themselves: they are given a backend (`kernels`) and
call its entries. Every entry has one signature on every backend and works in place where it
updates state. Symbols: N looked-up ids, U unique ids, V table rows, K/C row width, B batch,
F fields, I/H layer widths.
    index_ids(ids [N], V)                      -> unique [U], inverse [N], counts [U]
    scatter_add_rows(inverse [N], src [N, C], U) -> rows [U, C]
    cowclip_rows(row_grads [U, K], table [V, K], ids [U], counts [U], ratio, floor) -> scales [U]
    adam_rows(table, m, v, ids, row_grads, lr_t, beta1, beta2, eps)
    adam_table(table, m, v, ids, row_grads, l2, clip_absent, absent_ratio, absent_floor, lr_t, beta1, beta2, eps)
    adam_weights(params, grads, state, names, l2s, lr_t, adam)  the weights (every non-table parameter): L2 + Adam
    fm_forward(emb [B, F, K])                  -> out [B], cache          (engine/layers/fm.py)
    fm_backward(dout [B], cache, add)          -> demb [B, F, K]
    bias_relu(y [B, H], b [H])                 -> y <- max(y + b, 0)      (engine/kernels/dense.py)
    relu_mask_bias_grad(dy, y, out)            -> db [H]; out <- dy * [y > 0]
    dense_input_grad(dy [B, H], W [I, H])      -> dx [B, I]
"""
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

import numpy as np

from engine.kernels import adam, cowclip, dense, fm, scatter_add, weights_adam
from engine.layers.fm import fm_backward_numpy, fm_forward_numpy


@dataclass(frozen=True)
class Backend:
    name: str
    xp: ModuleType
    index_ids: Callable
    scatter_add_rows: Callable
    cowclip_rows: Callable
    adam_rows: Callable
    adam_table: Callable
    adam_weights: Callable
    fm_forward: Callable
    fm_backward: Callable
    bias_relu: Callable
    relu_mask_bias_grad: Callable
    dense_input_grad: Callable

    def to_host(self, array) -> np.ndarray:
        return array.get() if hasattr(array, "get") else np.asarray(array)

    def asarray(self, array, dtype=None):
        return self.xp.asarray(array, dtype=dtype)


# the NumPy forms (any array module: CuPy on the cuda backend) of the entries beyond the table kernels,
# which the cpu and cuda backends start from
NUMPY_KERNELS = dict(
    adam_weights=weights_adam.adam_weights_numpy,
    fm_forward=fm_forward_numpy,
    fm_backward=fm_backward_numpy,
    bias_relu=dense.bias_relu_numpy,
    relu_mask_bias_grad=dense.relu_mask_bias_grad_numpy,
    dense_input_grad=dense.dense_input_grad_numpy,
)


def _numpy_backend() -> Backend:
    return Backend("numpy", np, scatter_add.index_ids_numpy,
                   scatter_add.scatter_add_rows_numpy, cowclip.cowclip_rows_numpy,
                   adam.adam_rows_numpy, adam.adam_table_numpy, **NUMPY_KERNELS)


def _cpu_backend() -> Backend:
    return Backend("cpu", np, scatter_add.IdIndexer(), scatter_add.scatter_add_rows_cpu,
                   cowclip.cowclip_rows_cpu,
                   adam.adam_rows_cpu, adam.TableAdam(),
                   **{**NUMPY_KERNELS,          # the weights' Adam stays the NumPy loop
                      "fm_forward": fm.fm_forward_cpu,
                      "fm_backward": fm.fm_backward_cpu,
                      "bias_relu": dense.bias_relu_cpu,
                      "relu_mask_bias_grad": dense.relu_mask_bias_grad_cpu,
                      "dense_input_grad": dense.dense_input_grad_cpu})


def _cuda_backend() -> Backend:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        xp = np  # the simulator runs the CUDA kernels on host arrays
        index_ids = scatter_add.index_ids_numpy
    else:
        import cupy as xp

        index_ids = scatter_add.index_ids_cuda
    return Backend("cuda", xp, index_ids, scatter_add.scatter_add_rows_cuda,
                   cowclip.cowclip_rows_cuda,
                   adam.adam_rows_cuda, adam.TableAdamCuda(),
                   **{**NUMPY_KERNELS,          # dx = dy W^T stays a cuBLAS GEMM
                      "adam_weights": weights_adam.WeightsAdamCuda(),
                      "fm_forward": fm.fm_forward_cuda,
                      "fm_backward": fm.fm_backward_cuda,
                      "bias_relu": dense.bias_relu_cuda,
                      "relu_mask_bias_grad": dense.relu_mask_bias_grad_cuda})


def get_backend(name: str = "cpu") -> Backend:
    makers = {"numpy": _numpy_backend, "cpu": _cpu_backend, "cuda": _cuda_backend}
    if name not in makers:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(makers)}")
    return makers[name]()


def cuda_unavailable_reason() -> str | None:
    """None when CuPy and a CUDA device are usable, else a one-line reason."""
    try:
        import cupy
    except ImportError:
        return ('CuPy is not installed (pip install -e ".[cuda]" from the repository, or ".[cuda12]" for '
                'CUDA 12 drivers)')
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy sees no CUDA device"
    except Exception as error:  # CuPy raises its own runtime errors when no driver is present
        return f"CUDA is not usable: {str(error).splitlines()[0]}"
    return None


def resolve_device(device: str) -> tuple[Backend, str]:
    """'auto' | 'cpu' | 'cuda' -> (backend, a line saying what was chosen and why)."""
    if device == "cpu":
        return get_backend("cpu"), "device: cpu"
    reason = cuda_unavailable_reason()
    if device == "cuda":
        if reason:
            raise RuntimeError(f"--device cuda: {reason}")
        return get_backend("cuda"), "device: cuda"
    if device == "auto":
        if reason:
            return get_backend("cpu"), f"device: cpu (auto: {reason})"
        return get_backend("cuda"), "device: cuda (auto)"
    raise ValueError(f"unknown device {device!r}; choose auto, cpu or cuda")
