"""The one place that picks the array module `xp` and the sparse kernels.

Backends:
    numpy  NumPy arrays, the plain NumPy reference kernels (the test oracle; slow)
    cpu    NumPy arrays, Numba `@njit` kernels
    cuda   CuPy arrays, Numba `@cuda.jit` kernels (also runs under NUMBA_ENABLE_CUDASIM=1,
           on NumPy arrays, for tests)

Every kernel has one signature on every backend and works in place where it updates state:
    index_ids(ids [N], V)                      -> unique [U], inverse [N], counts [U]
    scatter_add_rows(inverse [N], src [N, C], U) -> rows [U, C]
    cowclip_rows(row_grads [U, K], table [V, K], ids [U], counts [U], ratio, floor) -> scales [U]
    adam_rows(table, m, v, ids, row_grads, lr_t, beta1, beta2, eps)
    adam_table(table, m, v, ids, row_grads, l2, clip_absent, absent_ratio, absent_floor, lr_t, beta1, beta2, eps)
"""
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

import numpy as np

from engine.kernels import adam, cowclip, scatter_add


@dataclass(frozen=True)
class Backend:
    name: str
    xp: ModuleType
    index_ids: Callable
    scatter_add_rows: Callable
    cowclip_rows: Callable
    adam_rows: Callable
    adam_table: Callable

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


def _numpy_backend() -> Backend:
    return Backend("numpy", np, scatter_add.index_ids_reference,
                   scatter_add.scatter_add_rows_reference, _cowclip_rows_reference,
                   adam.adam_rows_reference, adam.adam_table_reference)


def _cpu_backend() -> Backend:
    return Backend("cpu", np, scatter_add.IdIndexer(), scatter_add.scatter_add_rows_cpu,
                   _in_place_with_scales(cowclip.cowclip_rows_cpu, np),
                   adam.adam_rows_cpu, adam.TableAdam())


def _cuda_backend() -> Backend:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        xp = np  # the simulator runs the CUDA kernels on host arrays
        index_ids = scatter_add.index_ids_reference
    else:
        import cupy as xp

        index_ids = scatter_add.index_ids_cuda
    return Backend("cuda", xp, index_ids, scatter_add.scatter_add_rows_cuda,
                   _in_place_with_scales(cowclip.cowclip_rows_cuda, xp),
                   adam.adam_rows_cuda, adam.adam_table_cuda)


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
        return "CuPy is not installed (pip install 'cowclip-engine[cuda]')"
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
