"""engine.run.runtime: freed big blocks are reused, not faulted in again; Numba threads use the workqueue layer."""
import os
import platform
import subprocess
import sys

import pytest

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")

PROBE = """
import resource, sys
import numpy as np
from engine.run.memory import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else None
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.ones(25_000_000, dtype=np.float32)      # 100 MB, far above glibc's mmap threshold
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del block
print(applied, *faults)
"""


def page_faults(mode, repo_root):
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=repo_root, capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0], [int(x) for x in out[1:]]


@glibc_only
def test_retained_blocks_are_reused_without_faults(repo_root):
    applied, faults = page_faults("retain", repo_root)
    assert applied == "True"
    assert faults[0] > 0
    # the second and third 100 MB blocks reuse the first one's pages
    assert max(faults[1:]) * 10 < faults[0]


@glibc_only
def test_default_allocator_faults_every_block_in(repo_root):
    """The control: without the setting, each block is a fresh mmap and faults in again, which is
    what the setting is for (if this ever fails, glibc changed and the setting may be moot)."""
    _, faults = page_faults("default", repo_root)
    assert min(faults[1:]) * 2 > faults[0]


LAYER_PROBE = """
import numba, numpy as np
from engine.run.runtime import use_quiet_thread_pool
chosen = use_quiet_thread_pool()

@numba.njit(parallel=True)
def add_one(a):
    for i in numba.prange(a.size):
        a[i] += 1

a = np.zeros(1000)
add_one(a)
print(chosen, numba.threading_layer(), a.sum())
"""


@pytest.mark.parametrize("preset, want", [(None, "workqueue"), ("omp", "omp")])
def test_thread_pool_layer_is_workqueue_unless_the_user_chose(preset, want, repo_root):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    if preset:
        env["NUMBA_THREADING_LAYER"] = preset
    out = subprocess.run([sys.executable, "-c", LAYER_PROBE], cwd=repo_root, env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [want, want, "1000.0"]
