"""Are the replicas still equal? A digest of every replicated array, compared across ranks.

Data parallelism is exact only while every rank applies bitwise the same update to bitwise the
same parameters. Every K steps each rank hashes its replicated parameters and Adam moments
(BLAKE2b over the raw bytes, in name order); if the digests differ the run stops, naming the step
and the ranks that disagree with rank 0.
"""
import hashlib

from engine.run.errors import TrainingError


def replica_digest(arrays: dict, to_host) -> str:
    """{name: array} -> hex digest of the names, shapes, dtypes and bytes, in name order."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(arrays):
        host = to_host(arrays[name])
        h.update(f"{name}{host.shape}{host.dtype}".encode())
        h.update(host.tobytes())
    return h.hexdigest()


def check_replicas(comm, arrays: dict, to_host, step: int) -> None:
    """Raise TrainingError on every rank if any rank's arrays differ from rank 0's."""
    digests = comm.allgather_object(replica_digest(arrays, to_host))
    differ = [r for r, d in enumerate(digests) if d != digests[0]]
    if differ:
        raise TrainingError(f"replicas differ after global step {step}: rank(s) {differ} do not match rank 0 "
                            f"(parameters or Adam moments); the run is stopped")
