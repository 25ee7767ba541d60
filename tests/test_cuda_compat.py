"""engine/cuda_compat.py: the CUDA path starts on numpy >= 2.5, which has no `numpy.row_stack`.

A child process (the simulator must be chosen before Numba is imported) deletes
`numpy.row_stack` as numpy 2.5 did, then imports the engine's CUDA backend and runs its kernels
under NUMBA_ENABLE_CUDASIM=1. Where numba-cuda is installed it also imports the module that
died on the H200 (`numba.cuda.np.arrayobj`, which names `np.row_stack` while it loads). The
same script with the shim replaced by an empty module must fail: that shows the test can."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import sys, types
import numpy
vars(numpy).pop("row_stack", None)                     # numpy 2.5 removed it
if "--without-shim" in sys.argv:
    sys.modules["engine.cuda_compat"] = types.ModuleType("engine.cuda_compat")
from engine.backend import get_backend
gpu = get_backend("cuda")
inverse = numpy.array([0, 1, 0, 2, 1, 0])
src = numpy.arange(12, dtype=numpy.float32).reshape(6, 2)
rows = gpu.scatter_add_rows(inverse, src, 3)            # a @cuda.jit kernel, simulated
assert rows.tolist() == [[14.0, 17.0], [10.0, 12.0], [6.0, 7.0]], rows
assert numpy.row_stack is numpy.vstack, "numpy.row_stack was not restored"
try:
    import numba_cuda  # noqa: F401
except ImportError:
    print("numba-cuda not installed: checked the alias only")
else:
    import numba.cuda.np.arrayobj  # noqa: F401         # the module that raised on the H200
    print("numba-cuda", numba_cuda.__version__, "typing module imported")
print("CUDA path ok")
"""


def _run(*args):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    return subprocess.run([sys.executable, "-c", SCRIPT, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cuda_backend_runs_without_numpy_row_stack():
    result = _run()
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "CUDA path ok" in result.stdout


def test_the_same_run_fails_without_the_shim():
    result = _run("--without-shim")
    assert result.returncode != 0, result.stdout
    assert "row_stack" in result.stderr, result.stderr[-3000:]
