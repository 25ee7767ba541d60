"""The one error type of the entry points: a run that must stop with a one-line explanation."""
import contextlib

import click


class TrainingError(click.ClickException):
    """A user-facing failure: click prints 'Error: <message>' and exits 1, with no traceback."""


class Diverged(TrainingError):
    """The run stopped at global step `step` because it diverged (engine/run/guards.py); `loss` is
    that step's loss (None when not finite). The scaling study records it as the cell's result."""

    def __init__(self, message: str, step: int, loss: float | None):
        super().__init__(message)
        self.step, self.loss = step, loss


def one_line(error: BaseException) -> str:
    """The first line of an error's message (a KeyError's without the quotes repr adds)."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    text = text.strip()
    return text.splitlines()[0] if text else repr(error)


@contextlib.contextmanager
def refused_in_one_line():
    """Around a tool's work: an error that bad input raises (a missing or damaged file, a value out
    of range) ends the tool with one 'Error:' line and exit status 1, never a traceback."""
    try:
        yield
    except (ValueError, KeyError, OSError, MemoryError) as error:
        raise TrainingError(one_line(error)) from None
