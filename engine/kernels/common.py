"""Helpers shared by the kernel files: a 1-D launch, and
`cuda`, Numba's CUDA module. This is the one place that imports `numba.cuda` (the kernel files
take it from here), so the compatibility shims of engine/cuda_compat.py always run first.
CUDA kernels convert loads with `float64(x)`, not `float(x)`: numba-cuda types float() of a
float32 as float32 (checked in its PTX), the simulator as a Python float; float64() is a float64
on both, so the simulator tests the arithmetic the GPU runs."""
import numpy as np

from engine import cuda_compat  # noqa: F401  (must precede `numba.cuda`)
from numba import cuda, float64  # noqa: E402,F401  (re-exported for the kernel files)

from dataio.arrays import array_module_of  # noqa: E402,F401  (re-exported for the kernel files)

THREADS_PER_BLOCK = 256


def launch(kernel, num_threads: int, *args, threads_per_block: int = THREADS_PER_BLOCK) -> None:
    """Run a `cuda.jit` kernel with one thread per item; each kernel guards `if t < n`."""
    if num_threads > 0:
        blocks = (num_threads + threads_per_block - 1) // threads_per_block
        kernel[blocks, threads_per_block](*args)


def for_cuda(helper):
    """The form of an `@njit` helper that a `@cuda.jit` kernel calls.

    On a GPU, Numba compiles the helper for the device. The CUDA simulator instead runs kernels
    as Python with stand-in arrays that `@njit` cannot type, so there the kernel calls the
    helper's Python function.
    """
    from numba import config

    return helper.py_func if config.ENABLE_CUDASIM else helper


def contiguous_if_host(array):
    """A CUDA kernel takes CuPy views with their strides; the simulator, which runs kernels on
    host arrays, takes only contiguous ones, so host arrays are made contiguous (a copy if not)."""
    return np.ascontiguousarray(array) if isinstance(array, np.ndarray) else array
