"""engine.evaluate --predictions FILE: what a user joins on, one line per row of the scored split:

    row     the row's index in the split (0 .. N-1, the split's order on disk)
    label   its label, 0 or 1
    prob    the model's click probability (float64)

in the format FILE's suffix names:
    .npy      a structured array with fields row (int64), label (int8), prob (float64):
              np.load(FILE)["prob"]
    .csv      a header `row,label,prob`, probabilities with 17 significant digits (exact float64)
    .parquet  the three columns, written by pyarrow (or pandas with a parquet engine) when installed
Any other suffix is refused, and so is a directory that does not exist, before anything is scored. A file
already there is replaced only with --overwrite; the new one is written beside it and renamed over it, so
an interrupted write leaves the old file (or none) whole.
"""
import os
from pathlib import Path

import numpy as np

from engine.run.errors import TrainingError

FORMATS = (".npy", ".csv", ".parquet")


def check_predictions_path(path, overwrite: bool = False) -> Path:
    """The path, checked before scoring: a known suffix, an existing directory, not a directory itself, no
    file there unless `overwrite`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise TrainingError(f"--predictions {path}: unknown format {suffix or '(no suffix)'!r}; "
                            f"end the file name in one of {', '.join(FORMATS)}")
    if not path.parent.is_dir():
        raise TrainingError(f"--predictions {path}: the directory {path.parent} does not exist")
    if path.is_dir():
        raise TrainingError(f"--predictions {path}: is a directory")
    if path.exists() and not overwrite:
        raise TrainingError(f"--predictions {path}: the file exists; pass --overwrite to replace it")
    if suffix == ".parquet":
        _parquet_writer()
    return path


def _parquet_writer():
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet as pq

        return lambda table, path: pq.write_table(pyarrow.table(table), str(path))
    except ImportError:
        pass
    try:
        import pandas as pd

        pd.io.parquet.get_engine("auto")
        return lambda table, path: pd.DataFrame(table).to_parquet(path, index=False)
    except ImportError:
        raise TrainingError("--predictions .parquet needs pyarrow: pip install pyarrow "
                            "(or use .npy or .csv)")


def prediction_table(label, prob) -> dict:
    """-> {"row" (N,) int64, "label" (N,) int8, "prob" (N,) float64}."""
    prob = np.asarray(prob, dtype=np.float64)
    return {"row": np.arange(prob.shape[0], dtype=np.int64), "label": np.asarray(label).astype(np.int8),
            "prob": prob}


def write_predictions(path, label, prob, overwrite: bool = False) -> Path:
    """Write the table in the format of `path`'s suffix (check_predictions_path first), by replace. -> path."""
    path = check_predictions_path(path, overwrite)
    table = prediction_table(label, prob)
    suffix = path.suffix.lower()
    final, path = path, path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if suffix == ".npy":
            rows = np.empty(table["row"].shape[0], dtype=[("row", "<i8"), ("label", "i1"), ("prob", "<f8")])
            for key, values in table.items():
                rows[key] = values
            with open(path, "wb") as f:     # np.save(str) would append .npy to another name
                np.save(f, rows)
        elif suffix == ".csv":
            with open(path, "w") as f:
                f.write("row,label,prob\n")
                np.savetxt(f, np.column_stack([table["row"], table["label"], table["prob"]]),
                           fmt=["%d", "%d", "%.17g"], delimiter=",")
        else:
            _parquet_writer()(table, path)
        os.replace(path, final)
    except OSError as error:
        raise TrainingError(f"--predictions {final}: cannot write it ({error.strerror or error})")
    finally:
        path.unlink(missing_ok=True)
    return final
