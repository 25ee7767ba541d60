"""Keep freed memory in the process, so each training step reuses the pages of the last one.

A step at batch 131072 allocates and frees about 20 arrays of 50-210 MB (activations, their
gradients). glibc serves blocks that large with mmap and gives them back with munmap, so every
step faults all of that memory in again; on a VM whose balloon reports free pages to the host,
the pages are also handed back to the host in between and each fault costs far more. Telling
glibc to serve every block from its heap and never trim the heap makes the second step reuse the
first step's pages. Measured on the 2-core dev VM (DeepFM, batch 131072, V = 337,630): a step
went from 4.0-4.3 s to 2.6-2.7 s; see validate/BENCH_NOTES.md.

The cost: the process keeps its peak memory until it exits, which a training run does anyway.
This changes the allocator of the whole process, so the library never does it on import: the
entry points call it through engine.run.runtime.configure_process, and so can a user's script.
"""
import ctypes
import ctypes.util

# mallopt parameter numbers from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
NEVER_TRIM = -1          # mallopt(3): -1 disables trimming altogether


def retain_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse. True if it applied; False where the C
    library is not glibc (musl, macOS, Windows), which is left as it is."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # no block is served by mmap, so none is unmapped on free, and the heap is never shrunk
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1
