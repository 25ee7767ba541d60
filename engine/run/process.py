"""One process of a run, as the training loop sees it.

The loop (engine/train.py) talks to one object for everything that differs between a single process
and a rank of an MPI run: `SingleProcess` here, `engine.dist.session.Distributed` under --dist mpi.
Both answer the same calls, so the loop has no `if dist` branches:

    is_root          this process writes the run directory and prints the run's lines
    settle(cfg, resumed), agree(value), barrier()      set-up: the run's settings, rank 0's choices
    attach(model, kernels), wrap_reader(reader), place(params, state)
    loss_and_grads(model, params, batch, kernels, rng, accum) -> (loss, grads) of the whole batch
    rows_in_last_batch                                  rows of the whole (global) batch just trained
    after_step(params, state, global_step)              under MPI, the replica check
    evaluate(model, params, arrays, kernels) -> metrics over the whole split
    full_state(params, state) -> what the checkpoint holds (None, None on ranks that do not write)
    summary(params, state) -> what final_metrics.json records about the processes
    abort(message)                                      stop every process of the run
"""
from engine.accumulate import accumulated_loss_and_grads
from engine.evaluate import evaluate


class SingleProcess:
    """A run in this one process (--dist none)."""

    is_root = True
    rank, size = 0, 1

    def __init__(self):
        self.rows_in_last_batch = 0

    # ---- set-up -------------------------------------------------------------------------------

    def settle(self, cfg, resumed: bool) -> None:
        """A run saved by N > 1 ranks resumes only on N ranks."""
        if resumed and getattr(cfg, "ranks", 1) > 1:
            raise ValueError(f"this run was trained on {cfg.ranks} ranks with --dist mpi; resume it the same way "
                             f"(mpiexec -n {cfg.ranks} python -m engine.train --resume --dist mpi --out ...)")

    def agree(self, value):
        return value

    def barrier(self) -> None:
        pass

    def attach(self, model, kernels) -> None:
        pass

    def wrap_reader(self, reader):
        return reader

    def place(self, params: dict, state):
        return params, state

    # ---- one step -----------------------------------------------------------------------------

    def loss_and_grads(self, model, params: dict, batch, kernels, rng, accum: int) -> tuple[float, dict]:
        """The batch's loss and gradients; --accum N as N micro-batches merged before the update."""
        self.rows_in_last_batch = int(batch.label.shape[0])
        if accum > 1:
            return accumulated_loss_and_grads(model, params, batch, accum, kernels, rng)
        return model.loss(params, batch, kernels, training=True, rng=rng)

    def after_step(self, params: dict, state, global_step: int) -> None:
        pass

    # ---- evaluation, checkpoints, what the run reports ----------------------------------------

    def evaluate(self, model, params: dict, arrays: dict, kernels) -> dict:
        return evaluate(model, params, arrays, kernels)

    def full_state(self, params: dict, state):
        return params, state

    def summary(self, params: dict, state) -> dict:
        return {}

    def abort(self, message: str) -> None:
        """One process: the error itself ends the run."""
