"""One GPU per rank: rank r uses GPU (local rank r) mod (GPUs on its node).

Must run before the rank allocates anything on a GPU. On a node with fewer GPUs than ranks,
ranks share GPUs (correct, slower). NCCL (cupy.cuda.nccl) or a CUDA-aware MPI would let the
collectives read device memory directly; this engine stages device arrays through host memory
(engine/dist/comm.py), which works with any MPI.
"""


def select_device(local_rank: int, cupy_module=None) -> int | None:
    """Make GPU (local_rank mod count) current for this process. -> its index, None without GPUs."""
    if cupy_module is None:
        try:
            import cupy as cupy_module
        except ImportError:
            return None
    count = cupy_module.cuda.runtime.getDeviceCount()
    if count < 1:
        return None
    index = local_rank % count
    cupy_module.cuda.Device(index).use()
    return index
