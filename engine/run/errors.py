"""The one error type of the entry points: a run that must stop with a one-line explanation."""
import click


class TrainingError(click.ClickException):
    """A user-facing failure: click prints 'Error: <message>' and exits 1, with no traceback."""
