"""Process-wide settings the entry points (engine.train, engine.evaluate, validate.speed.bench,
validate.study.scaling) apply before the first step. They change the whole process, so importing the
library never applies them; a user's own script can call `configure_process()` too.

1. Freed memory stays in the process (engine/run/memory.py).
2. Numba's `workqueue` threading layer instead of OpenMP. Numba's OpenMP threads spin after each
   parallel kernel, on the same 2 cores where OpenBLAS's GEMM threads run next; the workqueue
   pool sleeps instead. Measured on the 2-core dev VM (DeepFM step, V = 337,630, dense tables):
   batch 1024 went from 82-125 ms to 50 ms, batch 131072 from 2.26-2.29 s to 2.20-2.22 s. Our
   parallel kernels run only on the training thread, which is all the workqueue layer supports.
   An explicit NUMBA_THREADING_LAYER in the environment is left as it is.
"""
import os

from engine.run.memory import retain_freed_memory

THREADING_LAYER = "workqueue"


def use_quiet_thread_pool() -> str:
    """Select the workqueue layer unless the user chose one; -> the layer that will be used.
    Must run before the first parallel kernel starts Numba's threads."""
    from numba import config

    if "NUMBA_THREADING_LAYER" not in os.environ:
        config.THREADING_LAYER = THREADING_LAYER
    return config.THREADING_LAYER


def configure_process(retain_memory: bool = True) -> dict:
    """Apply both settings (the first only if `retain_memory`: the bench can leave glibc's defaults
    to compare); -> what was applied (False: left as it was, or not glibc)."""
    return {"retain_freed_memory": retain_memory and retain_freed_memory(),
            "threading_layer": use_quiet_thread_pool()}
