"""Runs tests/cudasim in a child process with NUMBA_ENABLE_CUDASIM=1, so that CI, which has no
GPU, still executes every CUDA kernel (the simulator must be chosen before Numba is imported)."""
import os
import subprocess
import sys
from pathlib import Path


def test_cuda_kernels_under_the_simulator():
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    # the CUDA kernel tests, and the cuda-backend cases of the CowClip and Adam transcription tests
    targets = [str(root / "tests" / name) for name in ("cudasim", "test_cowclip.py", "test_adam.py")]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda",
                             *targets], cwd=root, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]
    assert int(result.stdout.split(" passed")[0].split()[-1]) >= 17, result.stdout[-2000:]
