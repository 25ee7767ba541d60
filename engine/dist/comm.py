"""The communicator: rank, size, and the few collectives the engine needs, each deterministic and
each counting the bytes this rank sends to other ranks.

Symbols: N ranks, P elements in a reduced buffer, n_r elements contributed by rank r.

    sum_fixed_order(x)   every rank gets bitwise the same sum_r x_r, added in rank order 0..N-1:
                         the buffer is cut into N chunks; rank j receives chunk j of every rank
                         (an all-to-all), adds them in rank order, and the summed chunks are
                         all-gathered. Each element is summed once, by one rank, in one order, so
                         every rank holds the same bits, equal to "gather to rank 0, sum in rank
                         order, broadcast", while each rank sends 2 (N-1)/N P elements (a ring
                         all-reduce's volume), not rank 0 sending (N-1) P.
    allgather_rows(x)    x_r (n_r, ...) of every rank, concatenated in rank order
    alltoall_rows(parts) parts[j] (n_rj, ...) goes to rank j; -> what every rank sent here, in rank order

Device arrays (CuPy) are staged through host memory: `to_host` before MPI, `to_device` after.
A CUDA-aware MPI or NCCL could pass device pointers directly; that path is not implemented.

Bytes sent are counted as the payload this rank hands over for other ranks (what a direct
exchange moves; ring and tree algorithms forward about as much per rank on average).
"""
from collections import defaultdict

import numpy as np


class Communicator:
    """A wrapper of an mpi4py communicator (COMM_WORLD unless given)."""

    def __init__(self, comm=None, to_host=np.asarray, to_device=None):
        from mpi4py import MPI

        self.mpi = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.local_rank = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank).Get_rank()
        self.to_host = to_host
        self.to_device = to_device          # None: arrays stay NumPy
        self.bytes_sent = defaultdict(int)  # kind ("dense", "sparse", ...) -> bytes this rank sent

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def _back(self, host: np.ndarray):
        return host if self.to_device is None else self.to_device(host)

    # ---- small Python objects (configuration, digests, counters) -----------------------------

    def bcast_object(self, obj, root: int = 0):
        return self.comm.bcast(obj, root=root)

    def allgather_object(self, obj) -> list:
        return self.comm.allgather(obj)

    def barrier(self) -> None:
        self.comm.Barrier()

    # ---- arrays ------------------------------------------------------------------------------

    def sum_fixed_order(self, array, kind: str = "dense"):
        """array (P,) -> (P,) sum over ranks in rank order, bitwise equal on every rank."""
        x = np.ascontiguousarray(self.to_host(array))
        N = self.size
        if N == 1:
            return self._back(x.copy())
        chunk = -(-x.shape[0] // N)
        padded = np.zeros(chunk * N, dtype=x.dtype)
        padded[:x.shape[0]] = x
        received = np.empty_like(padded)                 # (N chunks): chunk `rank` of every rank
        self.comm.Alltoall(padded, received)
        parts = received.reshape(N, chunk)
        mine = parts[0].copy()
        for r in range(1, N):                            # rank order, the same on every rank
            mine += parts[r]
        summed = np.empty_like(padded)
        self.comm.Allgather(mine, summed)
        self.bytes_sent[kind] += 2 * (N - 1) * chunk * x.itemsize
        return self._back(summed[:x.shape[0]])

    def allgather_rows(self, array, kind: str = "sparse") -> tuple:
        """array (n_r, ...) -> (concatenation over ranks in rank order, [n_0, ..., n_{N-1}])."""
        x = np.ascontiguousarray(self.to_host(array))
        trailing = x.shape[1:]
        row_elems = int(np.prod(trailing, dtype=np.int64))
        counts = self.comm.allgather(x.shape[0])
        out = np.empty((sum(counts), *trailing), dtype=x.dtype)
        self.comm.Allgatherv(x, (out, [c * row_elems for c in counts]))
        self.bytes_sent[kind] += (self.size - 1) * x.nbytes
        return self._back(out), counts

    def alltoall_rows(self, parts: list, kind: str = "sparse") -> tuple:
        """parts[j] (n_rj, ...) for rank j -> (what each rank sent here, concatenated in rank
        order; [n_0r, ..., n_{N-1}r]). All parts have one dtype and trailing shape."""
        host = [np.ascontiguousarray(self.to_host(p)) for p in parts]
        trailing, dtype = host[0].shape[1:], host[0].dtype
        row_elems = int(np.prod(trailing, dtype=np.int64))
        send_counts = [p.shape[0] for p in host]
        recv_counts = self.comm.alltoall(send_counts)
        send = np.concatenate(host) if len(host) > 1 else host[0]
        out = np.empty((sum(recv_counts), *trailing), dtype=dtype)
        self.comm.Alltoallv((send, [c * row_elems for c in send_counts]),
                            (out, [c * row_elems for c in recv_counts]))
        self.bytes_sent[kind] += sum(p.nbytes for j, p in enumerate(host) if j != self.rank)
        return self._back(out), recv_counts

    def abort(self, code: int = 1) -> None:
        """Stop every rank (an error on one rank would leave the others waiting in a collective)."""
        self.comm.Abort(code)
