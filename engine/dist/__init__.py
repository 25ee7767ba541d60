"""Scale-out on MPI (mpi4py): data-parallel training equal to one big batch, and row-sharded tables.

    mpiexec -n N python -m engine.train --dist mpi [--shard-tables] ...

Modules, one idea each:
    comm.py       the communicator: rank, size, fixed-order sum, gathers, all-to-all, bytes sent
    reader.py     rank r's rows [r b / N, (r + 1) b / N) of every global batch
    dropout.py    dropout masks drawn for the whole batch, so they do not depend on N
    gradients.py  each rank's weighted gradient share; dense sum; table RowGrads merged as --accum does
    sharded.py    --shard-tables: row % N == r owns the row; lookups and gradients routed to owners
    replicas.py   digests of the replicas, compared every K steps
    evaluate.py   predictions split over ranks, AUC over all of them on rank 0
    device.py     one GPU per rank
    session.py    `Distributed`: what the training loop calls (as engine/run/process.py's SingleProcess)
    bench.py      samples/s and bytes per step (python -m engine.dist.bench)

`--dist none` (the default) imports nothing from here but this file, and no MPI.
"""
import os
import sys


def connect(kind: str, shard_tables: bool = False, check_every: int = 50):
    """--dist none -> None; --dist mpi -> a Distributed for this rank. Other ranks than 0 stop
    printing to stdout (rank 0 prints the run's lines; errors still reach stderr)."""
    if kind == "none":
        if shard_tables:
            raise ValueError("--shard-tables needs --dist mpi")
        return None
    if kind != "mpi":
        raise ValueError(f"unknown --dist {kind!r}; choose none or mpi")
    try:
        from mpi4py import MPI  # noqa: F401
    except ImportError as error:
        raise RuntimeError(f"--dist mpi needs mpi4py and an MPI library: pip install -e '.[mpi]' ({error})")
    from engine.dist.comm import Communicator
    from engine.dist.session import Distributed

    dist = Distributed(Communicator(), shard_tables, check_every)
    if not dist.is_root:
        sys.stdout = open(os.devnull, "w")
    _abort_on_uncaught_exception(dist.comm)
    return dist


def _abort_on_uncaught_exception(comm) -> None:
    """A traceback on one rank stops every rank: the others would wait in a collective forever."""
    previous = sys.excepthook

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        sys.stderr.flush()
        if comm.size > 1:
            comm.abort(1)

    sys.excepthook = hook
