"""engine.train's command line, with models built in float64 when the first argument is --float64.

The exactness tests launch this under `mpiexec -n 2` and as one process: the real training loop
(engine/train.py and engine/dist), with float64 parameters so that the N-rank and one-process
runs can be held to 1e-12. Also, in this order after --float64:
    --cudasim         the cuda backend (its @cuda.jit kernels) under Numba's CUDA simulator, on
                      NumPy arrays; set NUMBA_ENABLE_CUDASIM=1 in the environment
    --perturb-rank R  change one weight on rank R after set-up, for the replica check to catch
"""
import functools
import sys

from engine import train
from engine.run.runtime import configure_process


def _perturbing(prepare, rank):
    def wrapped(cfg, out, resume, clip_rule, process):
        job, position = prepare(cfg, out, resume, clip_rule, process)
        if process.rank == rank:
            job.params["bias"][0] += 1e-9
        return job, position
    return wrapped


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--float64":
        args = args[1:]
        train.ModelConfig = functools.partial(train.ModelConfig, dtype="float64")
    if args and args[0] == "--cudasim":
        from engine.backend import get_backend

        args = args[1:]
        train.resolve_device = lambda device: (get_backend("cuda"), "device: cuda (Numba's CUDA simulator)")
    if args and args[0] == "--perturb-rank":
        train.prepare = _perturbing(train.prepare, int(args[1]))
        args = args[2:]
    configure_process()
    train.main(args, standalone_mode=True)
