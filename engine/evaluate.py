"""Predictions and test metrics of a model's parameters, and the command that scores a run's checkpoint.

    python -m engine.evaluate --run runs/deepfm-bs131072-... [--data DIR] [--split test] [--predictions FILE]

Prints AUC, logloss, normalized entropy and calibration (and the Bayes-optimal values when the data set
is synthetic) as one line of JSON; with --predictions, writes each row's index, label and click probability
(engine/run/predictions.py: .npy, .csv or .parquet, as the file's suffix says).
AUC needs both classes: without them it is null, with "auc_undefined" saying why (never a bare NaN).
--data must have the run's fields and vocabulary sizes; the run's own dataset directory must also
still have the fingerprint recorded at training (engine/run/directory.py).
"""
import contextlib
import json
import math
from pathlib import Path

from dataclasses import asdict

import click

from dataio.schema import Batch
from engine.backend import resolve_device
from engine.run.checkpoint import load_checkpoint
from engine.run.errors import TrainingError, one_line
from engine.run.predictions import check_predictions_path, write_predictions
from engine.layers.loss import sigmoid
from dataio.metrics import all_metrics
from models import ModelConfig, Schema, build_model


def predict(model, params, arrays: dict, kernels, batch_size: int = 65536):
    """Click probabilities (n,) of every row of `arrays` (sparse, dense, label), on the backend's device."""
    xp = kernels.xp
    n = arrays["label"].shape[0]
    out = []
    for lo in range(0, n, batch_size):
        part = Batch(*(arrays[k][lo:lo + batch_size] for k in ("sparse", "dense", "label")))
        out.append(sigmoid(model.logits(params, part, kernels).astype(xp.float64)))
    return xp.concatenate(out) if out else xp.zeros(0, dtype=xp.float64)


def evaluate(model, params, arrays: dict, kernels) -> dict:
    """-> {"auc", "logloss", "ne", "calibration"} of the model on `arrays` (dataio/metrics.py); a metric
    without meaning is None, and "auc_undefined" says why AUC is."""
    return scores(arrays["label"], predict(model, params, arrays, kernels))


def scores(label, prob) -> dict:
    """The metrics of probabilities against labels (n,); None where undefined, AUC's reason beside it."""
    if not label.shape[0]:
        result = {"auc": None, "logloss": None, "ne": None, "calibration": None}
    else:
        result = json_safe(all_metrics(label, prob))
    if result["auc"] is None:
        result["auc_undefined"] = auc_undefined_reason(label)
    return result


def auc_undefined_reason(label) -> str:
    """Why AUC cannot be computed: it compares positives with negatives, so it needs both."""
    n, positives = int(label.shape[0]), int(label.sum())
    if n == 0:
        return "the split has no rows"
    if positives == 0:
        return f"all {n} labels are 0 (no clicks), AUC needs both classes"
    if positives == n:
        return f"all {n} labels are 1 (only clicks), AUC needs both classes"
    return "the scores are not finite"


def json_safe(record: dict) -> dict:
    """The record with every non-finite float replaced by None (JSON has no NaN or Infinity)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


# config.json fields evaluation reads -> (what each must be, the check)
CONFIG_FIELDS = {"model": ("a string", lambda v: isinstance(v, str)),
                 "data": ("a string", lambda v: isinstance(v, str)),
                 "embed_dim": ("an integer >= 1", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
                 "schema": ("an object", lambda v: v is None or isinstance(v, dict)),
                 "data_fingerprint": ("a string", lambda v: v is None or isinstance(v, str)),
                 "vocab_digest": ("a string", lambda v: v is None or isinstance(v, str))}


def read_run_config(run_dir: Path) -> dict:
    """RUN/config.json with the fields evaluation reads checked, naming the file and the key."""
    from engine.run.files import read_json_object

    path = run_dir / "config.json"
    config = read_json_object(path)
    for key, (what, ok) in CONFIG_FIELDS.items():
        if key not in config and key in ("model", "data", "embed_dim"):
            raise ValueError(f"{path}: lacks {key!r}; is {run_dir} a run directory of engine.train?")
        if not ok(config.get(key)):
            raise ValueError(f"{path}: {key} must be {what}, not {json.dumps(config[key])[:40]}")
    return config


def check_data_matches_run(config: dict, meta: dict, data: str, run_dir: str) -> None:
    """Refuse data whose fields or vocabulary sizes differ from the run's, and the run's own dataset
    directory when it was rebuilt since (its fingerprint differs): ids would mean other things."""
    from engine.run.directory import data_fingerprint

    trained, given = config.get("schema") or {}, asdict(Schema.from_meta(meta))
    for key, what in (("sparse_names", "sparse fields"), ("vocab_sizes", "vocabulary sizes"),
                      ("dense_names", "dense features")):
        if key in trained and list(trained[key]) != list(given[key]):
            differ = [f"{a}/{b}" for a, b in zip(trained[key], given[key]) if a != b][:3]
            raise ValueError(f"{data}: its {what} differ from those run {run_dir} was trained on "
                             f"({len(given[key])} vs {len(trained[key])}; first differences run/data: {differ}); "
                             f"evaluate on data preprocessed with the run's vocabularies (--vocab-from)")
    check_same_vocabularies(config, meta, data, run_dir)
    recorded = config.get("data_fingerprint")
    same_dir = Path(data).resolve() == Path(config["data"]).resolve()
    if recorded and same_dir and data_fingerprint(data) != recorded:
        raise ValueError(f"{data}: the dataset was rebuilt since run {run_dir} was trained on it (meta.json "
                         f"fingerprint differs); its ids may mean other things now")


def check_same_vocabularies(config: dict, meta: dict, data: str, run_dir: str) -> None:
    """Equal vocabulary sizes are not equal vocabularies: refuse data whose vocabularies' digest
    differs from the run's (recorded in its config.json, or read from its dataset when older runs
    did not record it). Data encoded with --vocab-from the run's data has the run's digest."""
    from dataio.meta import vocabulary_digest

    trained = config.get("vocab_digest")
    if trained is None and Path(str(config.get("data"))).is_dir():
        with contextlib.suppress(ValueError, OSError):
            trained = vocabulary_digest(config["data"])
    given = vocabulary_digest(data, meta)
    if trained is not None and given is not None and given != trained:
        raise ValueError(f"{data}: its vocabularies differ from those run {run_dir} was trained on (digest "
                         f"{given[:19]}..., the run's {trained[:19]}...): the same ids mean other values; "
                         f"preprocess the data with --vocab-from the run's dataset")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--data", default=None, help="dataset directory (default: the run's)")
@click.option("--split", default="test", show_default=True)
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--predictions", default=None, type=click.Path(dir_okay=False),
              help="write row index, label and probability of every row: .npy (structured), .csv or .parquet, "
                   "as the suffix says")
@click.option("--overwrite", is_flag=True, help="replace the --predictions file if it exists")
def main(run_dir, data, split, device, predictions, overwrite):
    """Evaluate the checkpoint of a training run."""
    from dataio.meta import load_meta
    from dataio.reader import read_split

    if predictions:
        check_predictions_path(predictions, overwrite)   # before the scoring, not after it
    try:
        config = read_run_config(Path(run_dir))
        kernels, device_line = resolve_device(device)
        data = data or config["data"]
        meta = load_meta(data)
        schema = Schema.from_meta(meta)
        check_data_matches_run(config, meta, data, run_dir)
        model = build_model(config["model"], schema, ModelConfig(embed_dim=config["embed_dim"]))
        params, _, info = load_checkpoint(Path(run_dir), kernels.xp.asarray, model.param_shapes())
        arrays = {k: kernels.xp.asarray(v) for k, v in read_split(data, split).items()
                  if k in ("sparse", "dense", "label")}
    except (ValueError, FileNotFoundError, KeyError, RuntimeError, OSError, MemoryError) as error:
        raise TrainingError(one_line(error))
    prob = predict(model, params, arrays, kernels)
    result = {"split": split, "rows": int(arrays["label"].shape[0]), "global_step": info["global_step"],
              **scores(arrays["label"], prob)}
    if split == "test" and "bayes" in meta:
        result["bayes_auc"], result["bayes_logloss"] = meta["bayes"]["test_auc"], meta["bayes"]["test_logloss"]
    print(device_line)
    print(json.dumps(json_safe(result), allow_nan=False))
    if predictions:
        write_predictions(predictions, kernels.to_host(arrays["label"]), kernels.to_host(prob), overwrite)


if __name__ == "__main__":
    from engine.run.runtime import configure_process

    configure_process()   # keep freed memory, quiet Numba threads (engine/run/runtime.py)
    main()
