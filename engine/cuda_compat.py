"""Compatibility shims that must run before `numba.cuda` is imported.

numpy 2.5 removed `numpy.row_stack` (an alias of `numpy.vstack`, deprecated since numpy 2.0).
numba-cuda 0.30.4 still registers an overload for it when it builds its CUDA typing context
(`numba/cuda/np/arrayobj.py`: `overload(np.row_stack)(impl_np_vstack)`), so on a stock CUDA 13
image (numpy 2.5.2, numba-cuda 0.30.4) the first `@cuda.jit` launch died with
`AttributeError: module 'numpy' has no attribute 'row_stack'`. Putting the alias back
is exactly what numpy < 2.5 had, so it changes nothing for any other code.

`engine/kernels/common.py`, the one module that imports `numba.cuda`, imports this first.
Drop a shim once the numba-cuda it works around is no longer supported.
"""
import numpy


def restore_numpy_aliases() -> None:
    """numpy.row_stack = numpy.vstack where numpy no longer has it (numpy >= 2.5)."""
    if "row_stack" not in vars(numpy):      # vars(): no deprecation warning on numpy 2.0-2.4
        numpy.row_stack = numpy.vstack


restore_numpy_aliases()
