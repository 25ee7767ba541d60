"""validate/device_check.py: its smoke mode runs under the CUDA simulator and prints its table;
without a GPU (and without the simulator) it stops with a one-line reason, not a traceback."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(env_extra: dict, *args):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-m", "validate.device_check", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def test_device_check_smoke_under_the_cuda_simulator():
    result = _run({"NUMBA_ENABLE_CUDASIM": "1"}, "--tiny")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    out = result.stdout
    assert "device_check on CUDA simulator" in out
    assert "part   what" in out and " 0 failed" in out, out[-3000:]
    for part in ("kernel", "step", "repro", "speed"):
        assert any(line.startswith(part) for line in out.splitlines()), out[-3000:]
    # the reproducibility lines, and the ours-vs-torch table (the twin runs on the CPU under the simulator)
    assert out.count("PASS  reproducibility") == 2 and "FAIL" not in out, out[-3000:]
    assert "ours/torch" in out and "V=300 dense B=16" in out and "V=300 lazy B=16" in out, out[-3000:]


def test_device_check_help_runs_nothing():
    result = _run({}, "-h")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Usage:" in result.stdout and "--tiny" in result.stdout
    assert "device_check on" not in result.stdout and "skipped" not in result.stdout


def test_device_check_without_a_gpu_gives_one_line():
    from engine.backend import cuda_unavailable_reason

    if cuda_unavailable_reason() is None:
        pytest.skip("this machine has a usable GPU")
    result = _run({})
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.count("\n") == 1 and "skipped" in result.stdout
    assert "Traceback" not in result.stderr, result.stderr
