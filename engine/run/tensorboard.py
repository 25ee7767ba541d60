"""--tensorboard DIR: the records of metrics.jsonl as TensorBoard event files, as the reference writes its
curves and its --log norms with tf.summary.

    python -m engine.train ... --tensorboard runs/tb      then      tensorboard --logdir runs/tb

Written with tensorboardX (a small standalone event-file writer: no TensorFlow, no PyTorch), the
`tensorboard` extra: pip install -e ".[tensorboard]". One metrics.jsonl record becomes, at its global step:

    record                  tags
    step                    train/loss, train/running_loss, train/lr, train/lr_embed, train/samples_per_s
      --log norms           norm/<weight|grad|m|v>/<parameter>
      --audit               audit/<table>/rows_clipped_fraction, and histograms audit/<table>/scale,
                            audit/<table>/grad_norm, audit/<table>/weight_norm (the clip's per-row values)
    eval                    test/<auc|logloss|ne|calibration>, valid/<...> (early stopping), bayes/<auc|logloss>
    best                    best/<auc|logloss|ne|calibration>, best/valid_auc

A resumed run purges the events logged after its checkpoint's step (TensorBoard's purge_step), as
metrics.jsonl drops its lines after that step.
"""
from pathlib import Path

from engine.run.errors import TrainingError

STEP_SCALARS = ("loss", "running_loss", "lr", "lr_embed", "samples_per_s")
EVAL_SCALARS = ("auc", "logloss", "ne", "calibration")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_tensorboard(log_dir) -> None:
    """Before a run starts: tensorboardX importable, and log_dir a directory or nothing yet."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise TrainingError('--tensorboard needs tensorboardX: pip install -e ".[tensorboard]" '
                            '(or pip install tensorboardX)')
    log_dir = Path(log_dir)
    blocking = next((p for p in (log_dir, *log_dir.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise TrainingError(f"--tensorboard {log_dir}: {blocking} is a file, not a directory")


class TensorBoardWriter:
    """Turns metrics.jsonl records into TensorBoard scalars and histograms in `log_dir`."""

    def __init__(self, log_dir, purge_step: int | None = None):
        check_tensorboard(log_dir)
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step or None)

    def write(self, record: dict) -> None:
        kind, step = record.get("type"), record.get("step")
        if not _is_number(step):
            return
        if kind == "step":
            self._scalars("train", record, STEP_SCALARS, step)
            for key, value in record.items():
                if key.startswith("norm.") and _is_number(value):     # norm.<what>.<parameter>
                    _, what, name = key.split(".", 2)
                    self.writer.add_scalar(f"norm/{what}/{name}", value, step)
                elif key.startswith("audit.") and isinstance(value, dict):
                    self._audit(key[len("audit."):], value, step)
        elif kind == "eval":
            self._scalars("test", record, EVAL_SCALARS, step)
            self._scalars("valid", {k[len("valid_"):]: v for k, v in record.items() if k.startswith("valid_")},
                          EVAL_SCALARS, step)
            self._scalars("bayes", {k[len("bayes_"):]: v for k, v in record.items() if k.startswith("bayes_")},
                          ("auc", "logloss"), step)
        elif kind == "best":
            self._scalars("best", record, EVAL_SCALARS + ("valid_auc",), step)
        self.writer.flush()

    def _scalars(self, prefix: str, record: dict, keys, step: int) -> None:
        for key in keys:
            if _is_number(record.get(key)):
                self.writer.add_scalar(f"{prefix}/{key}", record[key], step)

    def _audit(self, table: str, audit: dict, step: int) -> None:
        rows = audit.get("rows") or 0
        if rows:
            self.writer.add_scalar(f"audit/{table}/rows_clipped_fraction", audit.get("rows_clipped", 0) / rows, step)
        for name, h in (audit.get("histograms") or {}).items():
            if h.get("num"):
                self.writer.add_histogram_raw(f"audit/{table}/{name}", h["min"], h["max"], h["num"], h["sum"],
                                              h["sum_squares"], h["limits"], h["counts"], step)

    def close(self) -> None:
        self.writer.close()


def open_tensorboard(log_dir, purge_step: int | None, writes: bool):
    """The writer of --tensorboard DIR for the process that writes the run's files, else None."""
    if log_dir is None or not writes:
        return None
    return TensorBoardWriter(log_dir, purge_step)
