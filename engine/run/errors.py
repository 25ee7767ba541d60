"""The one error type of the entry points: a run that must stop with a one-line explanation."""
import click


class TrainingError(click.ClickException):
    """A user-facing failure: click prints 'Error: <message>' and exits 1, with no traceback."""


class Diverged(TrainingError):
    """The run stopped at global step `step` because it diverged (engine/run/guards.py); `loss` is
    that step's loss (None when not finite). The scaling study records it as the cell's result."""

    def __init__(self, message: str, step: int, loss: float | None):
        super().__init__(message)
        self.step, self.loss = step, loss
