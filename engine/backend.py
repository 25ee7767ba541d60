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
    adam_dense_weights(params, grads, state, names, l2s, lr_t, adam)  every non-table weight, L2 + Adam
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

from engine.kernels import adam, cowclip, dense, dense_adam, fm, scatter_add
from engine.layers.fm import fm_backward_plain, fm_forward_plain


@dataclass(frozen=True)
class Backend:
    name: str
    xp: ModuleType
    index_ids: Callable
    scatter_add_rows: Callable
    cowclip_rows: Callable
    adam_rows: Callable
    adam_table: Callable
    adam_dense_weights: Callable
    fm_forward: Callable
    fm_backward: Callable
    bias_relu: Callable
    relu_mask_bias_grad: Callable
    dense_input_grad: Callable

    def to_host(self, array) -> np.ndarray:
        return array.get() if hasattr(array, "get") else np.asarray(array)

    def asarray(self, array, dtype=None):
        return self.xp.asarray(array, dtype=dtype)


def _cowclip_rows_reference(row_grads, table, ids, counts, ratio, floor):
    clipped, scales = cowclip.cowclip_rows_reference(row_grads, table, ids, counts, ratio, floor)
    row_grads[...] = clipped
    return scales


def _in_place_with_scales(kernel, xp):
    def cowclip_rows(row_grads, table, ids, counts, ratio, floor):
        scales = xp.empty(row_grads.shape[0], dtype=xp.float64)
        kernel(row_grads, table, ids, counts, float(ratio), float(floor), scales)
        return scales

    return cowclip_rows


# the plain (NumPy/CuPy) forms of the entries beyond the sparse kernels
PLAIN_DENSE_KERNELS = dict(
    adam_dense_weights=dense_adam.adam_dense_weights_reference,
    fm_forward=fm_forward_plain,
    fm_backward=fm_backward_plain,
    bias_relu=dense.bias_relu_reference,
    relu_mask_bias_grad=dense.relu_mask_bias_grad_reference,
    dense_input_grad=dense.dense_input_grad_reference,
)


def _numpy_backend() -> Backend:
    return Backend("numpy", np, scatter_add.index_ids_reference,
                   scatter_add.scatter_add_rows_reference, _cowclip_rows_reference,
                   adam.adam_rows_reference, adam.adam_table_reference, **PLAIN_DENSE_KERNELS)


def _cpu_backend() -> Backend:
    return Backend("cpu", np, scatter_add.IdIndexer(), scatter_add.scatter_add_rows_cpu,
                   _in_place_with_scales(cowclip.cowclip_rows_cpu, np),
                   adam.adam_rows_cpu, adam.TableAdam(),
                   **{**PLAIN_DENSE_KERNELS,          # the dense-weight Adam stays the plain loop
                      "fm_forward": fm.fm_forward_fused_cpu,
                      "fm_backward": fm.fm_backward_fused_cpu,
                      "bias_relu": dense.bias_relu_fused_cpu,
                      "relu_mask_bias_grad": dense.relu_backward_bias_grad_cpu,
                      "dense_input_grad": dense.dense_input_grad_cpu})


def _cuda_backend() -> Backend:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        xp = np  # the simulator runs the CUDA kernels on host arrays
        index_ids = scatter_add.index_ids_reference
    else:
        import cupy as xp

        index_ids = scatter_add.index_ids_cuda
    return Backend("cuda", xp, index_ids, scatter_add.scatter_add_rows_cuda,
                   _in_place_with_scales(cowclip.cowclip_rows_cuda, xp),
                   adam.adam_rows_cuda, adam.TableAdamCuda(),
                   **{**PLAIN_DENSE_KERNELS,          # dx = dy W^T stays a cuBLAS GEMM
                      "adam_dense_weights": dense_adam.DenseWeightsAdam(),
                      "fm_forward": fm.fm_forward_fused_cuda,
                      "fm_backward": fm.fm_backward_fused_cuda,
                      "bias_relu": dense.bias_relu_fused_cuda,
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
