"""Where numba-cuda and NVVM are installed (no GPU needed), the new CUDA kernels compile for
sm_90 with `numpy.row_stack` gone, and the ones documented as float64 arithmetic really emit
float64 instructions (numba-cuda keeps float() of a float32 in float32; the kernels use float64()).
Skipped elsewhere, e.g. in CI, which has neither."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import numpy
vars(numpy).pop("row_stack", None)
from engine.kernels.common import cuda
from numba import types as t
from numba.cuda import dispatcher
# a kernel that calls an @njit helper (engine/kernels/common.py for_cuda) makes numba-cuda ask the
# current device for its compute capability; with no GPU, answer the one compiled for
dispatcher.get_current_device = lambda: type("Device", (), {"compute_capability": (9, 0)})()
from engine.kernels import dense, fm, scatter_add
f32, i64 = t.float32, t.int64
A = lambda dt, nd, layout="C": t.Array(dt, nd, layout)
kernels = {
    "chunk_sums": (scatter_add._chunk_sums_kernel, (A(i64, 1), A(f32, 2), A(i64, 1), A(i64, 1), A(i64, 1),
                                                    A(t.float64, 2))),
    "fm_forward": (fm._fm_forward_kernel, (A(f32, 3), A(f32, 1), A(f32, 2))),
    "fm_backward": (fm._fm_backward_kernel, (A(f32, 1), A(f32, 3), A(f32, 2), A(f32, 3, "A"), t.boolean,
                                             A(f32, 3))),
    "bias_relu": (dense._bias_relu_kernel, (A(f32, 2), A(f32, 1))),
    "relu_mask_partial": (dense._relu_mask_partial_kernel, (A(f32, 2, "A"), A(f32, 2), A(f32, 2),
                                                            A(t.float64, 2))),
}
for name, (kernel, signature) in kernels.items():
    ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=(9, 0))
    print(name, len(set(__import__("re").findall(r"\b(?:add|sub|mul|fma)\.[a-z.]*f64", ptx))))
"""


def test_cuda_kernels_compile_for_sm90_in_float64():
    try:
        import numba_cuda  # noqa: F401
    except ImportError:
        pytest.skip("numba-cuda is not installed")
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if result.returncode and re.search(r"NVVM|libnvvm|nvvm", result.stderr):
        pytest.skip("numba-cuda finds no NVVM (pip install 'numba-cuda[cu13]')")
    assert result.returncode == 0, result.stderr[-3000:]
    float64_ops = dict(line.split() for line in result.stdout.splitlines())
    for name in ("chunk_sums", "fm_forward", "fm_backward", "relu_mask_partial"):
        assert int(float64_ops[name]) > 0, float64_ops
    assert int(float64_ops["bias_relu"]) == 0            # y + b stays float32, as the plain form
