"""Compatibility shims that must run before `numba.cuda` is imported.

numpy 2.5 removed `numpy.row_stack` (an alias of `numpy.vstack`, deprecated since numpy 2.0).
numba-cuda 0.30.4 still registers an overload for it when it builds its CUDA typing context
(`numba/cuda/np/arrayobj.py`: `overload(np.row_stack)(impl_np_vstack)`), so on a stock CUDA 13
image (numpy 2.5.2, numba-cuda 0.30.4) the first `@cuda.jit` launch died with
`AttributeError: module 'numpy' has no attribute 'row_stack'`. Putting the alias back
is exactly what numpy < 2.5 had, so it changes nothing for any other code.

numba-cuda warns on every launch of fewer than 128 blocks ("Grid size ... will likely result in GPU
under-utilization due to low occupancy"): at a small batch, or for the short launches that sum a
bias gradient, that is every step. `quiet_low_occupancy` turns that warning off unless the user set
NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS; the roofline (validate/speed/roofline.py) is where occupancy is judged.

`engine/kernels/common.py`, the one module that imports `numba.cuda`, imports this first.
Drop a shim once the numba-cuda it works around is no longer supported.
"""
import os

import numpy


def quiet_low_occupancy() -> None:
    """No low-occupancy warning per launch unless NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS is set (read by
    numba-cuda's config when numba.cuda is first imported, so this runs before that)."""
    os.environ.setdefault("NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS", "0")


def restore_numpy_aliases() -> None:
    """numpy.row_stack = numpy.vstack where numpy no longer has it (numpy >= 2.5)."""
    if "row_stack" not in vars(numpy):      # vars(): no deprecation warning on numpy 2.0-2.4
        numpy.row_stack = numpy.vstack


restore_numpy_aliases()
quiet_low_occupancy()
