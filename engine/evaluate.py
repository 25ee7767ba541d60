"""Predictions and test metrics of a model's parameters, and the command that scores a run's checkpoint.

    python -m engine.evaluate --run runs/deepfm-bs131072-... [--data DIR] [--split test] [--predictions FILE]

Prints AUC, logloss, normalized entropy and calibration (and the Bayes-optimal values when the data set is synthetic); with
--predictions, writes one click probability per row (float64 .npy, in the split's row order).
"""
import json
from pathlib import Path

import click
import numpy as np

from dataio.reader import Batch
from engine.backend import resolve_device
from engine.checkpoint import load_checkpoint
from engine.errors import TrainingError
from engine.layers.loss import sigmoid
from engine.metrics import all_metrics
from models import ModelConfig, Schema, build_model


def predict(model, params, arrays: dict, kernels, batch_size: int = 65536):
    """Click probabilities (n,) of every row of `arrays` (sparse, dense, label), on the backend's device."""
    xp = kernels.xp
    n = arrays["label"].shape[0]
    out = []
    for lo in range(0, n, batch_size):
        part = Batch(*(arrays[k][lo:lo + batch_size] for k in ("sparse", "dense", "label")))
        out.append(sigmoid(model.logits(params, part).astype(xp.float64)))
    return xp.concatenate(out)


def evaluate(model, params, arrays: dict, kernels) -> dict:
    """-> {"auc", "logloss", "ne", "calibration"} of the model on `arrays` (engine/metrics.py)."""
    prob = predict(model, params, arrays, kernels)
    return all_metrics(arrays["label"], prob)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--data", default=None, help="dataset directory (default: the run's)")
@click.option("--split", default="test", show_default=True)
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--predictions", default=None, type=click.Path(dir_okay=False), help="write probabilities (.npy)")
def main(run_dir, data, split, device, predictions):
    """Evaluate the checkpoint of a training run."""
    from dataio.meta import load_meta
    from dataio.reader import read_split

    try:
        config = json.loads((Path(run_dir) / "config.json").read_text())
        kernels, device_line = resolve_device(device)
        data = data or config["data"]
        meta = load_meta(data)
        schema = Schema.from_meta(meta)
        model = build_model(config["model"], schema, ModelConfig(embed_dim=config["embed_dim"]))
        params, _, info = load_checkpoint(Path(run_dir), kernels.xp.asarray)
        arrays = {k: kernels.xp.asarray(v) for k, v in read_split(data, split).items()
                  if k in ("sparse", "dense", "label")}
    except (ValueError, FileNotFoundError, KeyError, RuntimeError, OSError) as error:
        raise TrainingError(str(error).strip().splitlines()[0])
    prob = predict(model, params, arrays, kernels)
    result = {"split": split, "rows": int(arrays["label"].shape[0]), "global_step": info["global_step"],
              **all_metrics(arrays["label"], prob)}
    if split == "test" and "bayes" in meta:
        result["bayes_auc"], result["bayes_logloss"] = meta["bayes"]["test_auc"], meta["bayes"]["test_logloss"]
    print(device_line)
    print(json.dumps(result))
    if predictions:
        np.save(predictions, kernels.to_host(prob))


if __name__ == "__main__":
    from engine.runtime import configure_process

    configure_process()   # keep freed memory, quiet Numba threads (engine/runtime.py)
    main()
