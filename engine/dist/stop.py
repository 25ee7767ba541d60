"""All ranks stop together: the one way an MPI run ends early.

Whatever stops one rank (an error, an uncaught exception, a MemoryError, SIGINT or SIGTERM) must
stop all of them: the others would otherwise wait in a collective forever and `mpiexec` would never
exit. Every such path ends in `stop_every_rank`, which prints the reason once, calls MPI_Abort (the
launcher then kills every rank) and ends this process.

Printed once: when every rank meets the same reason at the same time (a signal that `mpiexec`
forwards to all ranks, an error that every rank finds in the same settings), rank 0 speaks and
aborts at once while the other ranks wait ABORT_GRACE_S before speaking; rank 0's abort ends them
first. A reason met on one rank only is printed by that rank, ABORT_GRACE_S later.

Signals: a Python handler runs only in the main thread and only between bytecodes, so a rank
waiting in MPI would never run it. `signal.set_wakeup_fd` makes the C-level handler write the
signal's number into a pipe; a watcher thread blocked on that pipe wakes at once (mpi4py releases
the GIL while it waits in MPI) and stops every rank from there.
"""
import os
import signal
import sys
import threading
import time

ABORT_GRACE_S = 1.0                              # a non-root rank's wait before it speaks and aborts
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_stopping = threading.Lock()                     # the first reason wins; later ones wait to be killed


def stop_every_rank(comm, reason: str) -> None:
    """Print `reason` (naming this rank) and abort the whole MPI job. Does not return when N > 1."""
    if comm.size <= 1:
        return
    if not _stopping.acquire(blocking=False):    # another thread of this rank is already stopping it
        time.sleep(3600)
    if not comm.is_root:
        time.sleep(ABORT_GRACE_S)
    print(f"Error (rank {comm.rank}): {reason}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    time.sleep(0.1)  # the launcher forwards the line before it kills the ranks
    comm.abort(1)
    os._exit(1)      # some MPI_Abort implementations (MPICH's wheel) return once the launcher is told


def abort_on_uncaught_exception(comm) -> None:
    """A traceback on one rank stops every rank (after the traceback is printed)."""
    previous = sys.excepthook

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        sys.stderr.flush()
        stop_every_rank(comm, f"{kind.__name__}: {value}".splitlines()[0])

    sys.excepthook = hook


def abort_on_signal(comm) -> None:
    """SIGINT (Ctrl-C, which mpiexec forwards) and SIGTERM on any rank stop every rank within
    ABORT_GRACE_S, also while this rank waits inside an MPI call. Call from the main thread."""
    if comm.size <= 1:
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    for number in STOP_SIGNALS:
        signal.signal(number, _ignore_in_main_thread)

    def watch():
        while True:   # the pipe also hears signals other Python handlers catch (SIGCHLD, ...): not ours
            number = os.read(read_end, 1)[0]
            if number in STOP_SIGNALS:
                stop_every_rank(comm, f"stopped by {signal.Signals(number).name}")

    threading.Thread(target=watch, name="stop-every-rank-on-signal", daemon=True).start()


def _ignore_in_main_thread(number, frame) -> None:
    """The watcher thread acts on the signal; the main thread carries on until the abort ends it
    (raising KeyboardInterrupt here would end this rank alone and leave the others waiting)."""
