"""Which array module holds an array: numpy for host arrays, cupy for device arrays.

The one copy, in the bottom layer, importing neither numba nor cupy until a device array is seen:
the metrics, the loss and the layers ask it without loading Numba's CUDA module (the CUDA simulator
works on numpy arrays, so it answers numpy there too).
"""
import numpy as np


def array_module_of(array):
    """-> numpy for a numpy array, else cupy."""
    if isinstance(array, np.ndarray):
        return np
    import cupy

    return cupy
