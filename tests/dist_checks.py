"""Collective checks run under `mpiexec -n 2` by tests/test_dist.py; each prints 'ok <name>' or fails.

    fixed_order_sum    every rank gets bitwise the same sum, equal to summing in rank order
    gathers            allgather_rows and alltoall_rows deliver in rank order
    host_staging       device arrays (a stand-in class with .get()) go through host memory and come back
    replica_check      equal replicas pass; one changed weight stops every rank, naming the step
"""
import numpy as np

from engine.dist.comm import Communicator
from engine.dist.replicas import check_replicas
from engine.run.errors import TrainingError


class DeviceArray:
    """Stands in for a CuPy array: the data lives 'elsewhere' and comes back with .get()."""

    def __init__(self, host):
        self.host = np.array(host)

    def get(self):
        return self.host.copy()


def data_of(rank: int, n: int = 1001) -> np.ndarray:
    # values of very different magnitude, so the order of addition shows in the bits
    return np.random.default_rng(rank).standard_normal(n) * 10.0 ** np.random.default_rng(99 + rank).integers(-8, 8, n)


def fixed_order_sum(comm: Communicator) -> None:
    total = comm.sum_fixed_order(data_of(comm.rank))
    expected = data_of(0).copy()
    for r in range(1, comm.size):
        expected += data_of(r)
    assert np.array_equal(total, expected)
    everyone = comm.allgather_object(total.tobytes())
    assert all(b == everyone[0] for b in everyone)
    assert comm.bytes_sent["dense"] == 2 * (comm.size - 1) * (-(-1001 // comm.size)) * 8


def gathers(comm: Communicator) -> None:
    mine = np.full((comm.rank + 1, 3), comm.rank, dtype=np.float32)
    rows, counts = comm.allgather_rows(mine)
    assert counts == [r + 1 for r in range(comm.size)]
    assert np.array_equal(rows[:, 0], np.concatenate([np.full(r + 1, r) for r in range(comm.size)]))
    parts = [np.full((j + 1, 2), 10 * comm.rank + j, dtype=np.int64) for j in range(comm.size)]
    got, got_counts = comm.alltoall_rows(parts)
    assert got_counts == [comm.rank + 1] * comm.size
    assert np.array_equal(got[:, 0], np.repeat([10 * r + comm.rank for r in range(comm.size)], comm.rank + 1))


def host_staging(comm: Communicator) -> None:
    staged = Communicator(comm.comm, to_host=lambda a: a.get(), to_device=DeviceArray)
    total = staged.sum_fixed_order(DeviceArray(data_of(comm.rank)))
    assert isinstance(total, DeviceArray)
    assert np.array_equal(total.get(), comm.sum_fixed_order(data_of(comm.rank)))
    rows, _ = staged.allgather_rows(DeviceArray(np.arange(3.0) + comm.rank))
    assert isinstance(rows, DeviceArray) and rows.get().shape == (3 * comm.size,)


def replica_check(comm: Communicator) -> None:
    arrays = {"w": np.arange(5.0), "b": np.ones(2)}
    check_replicas(comm, arrays, np.asarray, step=3)
    if comm.rank == comm.size - 1:
        arrays["w"][2] += 1e-15
    try:
        check_replicas(comm, arrays, np.asarray, step=4)
    except TrainingError as error:
        assert f"after global step 4: rank(s) [{comm.size - 1}]" in error.message, error.message
    else:
        raise AssertionError("a changed replica was not caught")


if __name__ == "__main__":
    comm = Communicator()
    assert comm.size >= 2, "run under mpiexec -n 2"
    for check in (fixed_order_sum, gathers, host_staging, replica_check):
        check(comm)
        comm.barrier()
        print(f"ok {check.__name__} rank {comm.rank}", flush=True)
