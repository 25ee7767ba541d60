"""Runs tests/cudasim in a child process with NUMBA_ENABLE_CUDASIM=1, so that CI, which has no
GPU, still executes every CUDA kernel (the simulator must be chosen before Numba is imported)."""
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path


def test_cuda_kernels_under_the_simulator(tmp_path):
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    report = tmp_path / "cudasim.xml"
    # the CUDA kernel tests, and the cuda-backend cases of the CowClip and Adam transcription tests
    targets = [str(root / "tests" / name) for name in ("cudasim", "test_cowclip.py", "test_adam.py")]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda",
                             f"--junitxml={report}", *targets], cwd=root, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    suite = ElementTree.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k)) for k in ("tests", "failures", "errors", "skipped")}
    assert counts["failures"] == counts["errors"] == counts["skipped"] == 0, counts
    assert counts["tests"] >= 17, counts   # every kernel test ran, none was deselected by mistake
