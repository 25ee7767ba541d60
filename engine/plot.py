"""Learning curves of one or more runs, overlaid, into a PNG.

    python -m engine.plot runs/deepfm-bs131072-... runs/deepfm-bs8192-... --out curves.png [--x samples]

Five panels from each run's metrics.jsonl: the training loss of every logged step; and of every
evaluation the AUC (test; valid as a dashed line when early stopping measured it), the logloss,
the normalized entropy (NE) and the calibration (mean prediction / mean label, 1 is perfect). A dotted
line marks the Bayes-optimal AUC and logloss when the data is synthetic (its meta.json knows them).

The x-axis (--x):
    samples   samples seen: global step s of a run with batch size bs and N training rows per
              epoch (spe = ceil(N / bs) batches, the last one partial) has seen
              (s // spe) * N + min((s % spe) * bs, N) samples. The default when the runs' batch
              sizes differ: 131072 and 8192 compared per update would compare 16x more data.
    epochs    samples / N
    steps     the global step (the default when every run has the same batch size)

Each run is one colour, labelled "model bs rule" from its config.json (or --label, once per run); one
legend serves every panel.
"""
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import click

from engine.run.errors import TrainingError
from engine.run.files import read_json_object

X_AXES = ("samples", "epochs", "steps")
X_TITLES = {"samples": "samples seen", "epochs": "epochs", "steps": "global step (updates)"}


@dataclass
class Run:
    """One run's curves and what the x-axis needs."""
    path: Path
    label: str
    bs: int
    train_rows: int | None                      # N, from the dataset's meta.json (None if it is gone)
    steps: list = field(default_factory=list)   # [(step, loss)]
    evals: list = field(default_factory=list)   # [eval record]

    def x(self, step: int, axis: str) -> float:
        """Global step -> the x-axis' value."""
        if axis == "steps":
            return step
        if self.train_rows is None:
            if axis == "epochs":
                raise TrainingError(f"--x epochs: the training rows of {self.path} are unknown (its dataset's "
                                    f"meta.json is not at the config.json's 'data'); use --x samples or steps")
            return step * self.bs                # without the data's size: every batch counted full
        per_epoch = math.ceil(self.train_rows / self.bs)
        samples = (step // per_epoch) * self.train_rows + min((step % per_epoch) * self.bs, self.train_rows)
        return samples if axis == "samples" else samples / self.train_rows


def _records(path: Path):
    """(line number, record) of every line of metrics.jsonl; a bad line is one error naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise TrainingError(f"{path}: not UTF-8 text (byte {error.start}); is it a metrics.jsonl of engine.train?")
    except OSError as error:
        raise TrainingError(f"{path}: cannot read it ({error.strerror})")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise TrainingError(f"{path}, line {number}: not JSON ({error.msg})")
        if not isinstance(record, dict):
            raise TrainingError(f"{path}, line {number}: a JSON object was expected, found {line.strip()[:40]!r}")
        yield number, record


def _number(record: dict, key: str, where: str, required: bool = True):
    value = record.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TrainingError(f"{where}: field {key!r} should be a number, found {value!r}")
    return value


def read_config(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    if not path.is_file():
        return {}
    return read_json_object(path, TrainingError)


def short_label(config: dict, run_dir: Path) -> str:
    """'model bs rule' from config.json: the rule is --scale-rule, or under auto what it resolved to."""
    if not config:
        return run_dir.name
    hp = config.get("hp") if isinstance(config.get("hp"), dict) else {}
    rule = config.get("scale_rule", "?")
    if rule == "auto":
        rule = "cowclip" if hp.get("clip") else "no clip"
    return f"{config.get('model', '?')} bs {config.get('bs', '?')} {rule}"


def _train_rows(config: dict) -> int | None:
    meta = Path(str(config.get("data", ""))) / "meta.json"
    try:
        rows = json.loads(meta.read_text())["splits"]["train"]["rows"]
        return int(rows) if int(rows) > 0 else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_run(run_dir, label: str | None = None) -> Run:
    """RUN/metrics.jsonl and RUN/config.json -> Run. Bad files: one TrainingError naming file and line."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise TrainingError(f"{path}: not found; is {run_dir} a run directory of engine.train?")
    config = read_config(run_dir)
    bs = config.get("bs", 1)
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        raise TrainingError(f"{run_dir / 'config.json'}: field 'bs' should be a positive integer, found {bs!r}")
    run = Run(run_dir, label or short_label(config, run_dir), bs, _train_rows(config))
    for number, record in _records(path):
        where = f"{path}, line {number}"
        if record.get("type") == "step":
            step, loss = _number(record, "step", where), _number(record, "loss", where, required=False)
            if loss is not None:     # a non-finite loss is written as null
                run.steps.append((step, loss))
        elif record.get("type") == "eval":
            _number(record, "step", where)
            for key in ("auc", "logloss", "ne", "calibration", "valid_auc", "bayes_auc", "bayes_logloss"):
                _number(record, key, where, required=False)
            run.evals.append(record)
    if not run.steps and not run.evals:
        raise TrainingError(f"{path}: no logged steps or evaluations to plot")
    return run


def default_x(runs: list) -> str:
    return "samples" if len({run.bs for run in runs}) > 1 else "steps"


PANELS = (("loss", "training loss (logged steps)", "logloss"), ("auc", "AUC", "AUC"),
          ("logloss", "test logloss", "logloss"), ("ne", "test normalized entropy", "NE (1 = base rate)"),
          ("calibration", "test calibration", "mean prediction / mean label"))


def draw(runs: list, x: str):
    """The figure of `runs` against x-axis `x`. -> (figure, {panel name: axes})."""
    import matplotlib

    matplotlib.use("Agg")   # files only, no display needed
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    for run in runs:
        run.x(0, x)                               # an axis a run cannot give fails here, before any figure
    fig, grid = plt.subplots(2, 3, figsize=(15, 8))
    axes = dict(zip([name for name, _, _ in PANELS], grid.flat))
    grid.flat[-1].axis("off")                     # the legend's place
    bayes = {}
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        if run.steps:
            axes["loss"].plot([run.x(s, x) for s, _ in run.steps], [v for _, v in run.steps], color=color,
                              linewidth=1, label=run.label)
        for key in ("auc", "logloss", "ne", "calibration"):
            points = [(run.x(r["step"], x), r[key]) for r in run.evals if r.get(key) is not None]
            if points:
                axes[key].plot(*zip(*points), color=color, marker="o", markersize=3,
                               label=f"{run.label} test" if key == "auc" else run.label)
        valid = [(run.x(r["step"], x), r["valid_auc"]) for r in run.evals if r.get("valid_auc") is not None]
        if valid:
            axes["auc"].plot(*zip(*valid), color=color, linestyle="--", marker="x", markersize=3,
                             label=f"{run.label} valid")
        for key in ("auc", "logloss"):
            value = next((r[f"bayes_{key}"] for r in run.evals if r.get(f"bayes_{key}") is not None), None)
            if value is not None:
                bayes[key] = value
    for key, value in bayes.items():
        axes[key].axhline(value, color="black", linestyle=":", linewidth=1, label=f"Bayes-optimal {key}")
    axes["calibration"].axhline(1.0, color="grey", linewidth=0.8)
    for name, title, ylabel in PANELS:
        ax = axes[name]
        ax.set_title(title if name != "auc" else "AUC (test solid" + (", valid dashed)" if any(
            r.get("valid_auc") is not None for run in runs for r in run.evals) else ")"))
        ax.set_xlabel(X_TITLES[x])
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    if x == "samples":
        for ax in axes.values():
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: count_text(value)))
    # one legend: a colour per run, then what the line styles mean
    handles = [Line2D([], [], color=f"C{i % 10}", linewidth=2, label=run.label) for i, run in enumerate(runs)]
    handles.append(Line2D([], [], color="grey", marker="o", label="test"))
    if any(r.get("valid_auc") is not None for run in runs for r in run.evals):
        handles.append(Line2D([], [], color="grey", linestyle="--", marker="x", label="valid (early stopping)"))
    if bayes:
        handles.append(Line2D([], [], color="black", linestyle=":", label="Bayes-optimal (synthetic data)"))
    grid.flat[-1].legend(handles=handles, loc="center", fontsize=10, frameon=False)
    fig.tight_layout()
    return fig, axes


def count_text(value: float) -> str:
    """A tick label of samples seen: 0, 500, 20K, 1.5M, 2B."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= size:
            return f"{value / size:g}{unit}"
    return f"{value:g}"


def plot_runs(run_dirs: list, out: Path, labels: list | None = None, x: str | None = None) -> Path:
    """Draw the curves of `run_dirs` into the PNG `out`. -> out."""
    import matplotlib.pyplot as plt

    runs = [read_run(d, labels[i] if labels else None) for i, d in enumerate(run_dirs)]
    fig, _ = draw(runs, x or default_x(runs))
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
    except OSError as error:
        raise TrainingError(f"--out {out}: cannot write it ({error.strerror or error})")
    finally:
        plt.close(fig)
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="the PNG to write")
@click.option("--x", "x", default=None, type=click.Choice(X_AXES),
              help="x-axis: samples seen, epochs or global steps (default: samples when the runs' batch sizes "
                   "differ, else steps)")
@click.option("--label", "labels", multiple=True,
              help="a legend label per run, in order (default: 'model bs rule' from each run's config.json)")
def main(runs, out, x, labels):
    """Draw the learning curves of training runs (train loss; AUC, logloss, NE, calibration) into a PNG."""
    if labels and len(labels) != len(runs):
        raise TrainingError(f"--label given {len(labels)} times for {len(runs)} runs; give one per run or none")
    if Path(out).suffix.lower() != ".png":
        raise TrainingError(f"--out {out}: the file name must end in .png")
    blocking = next((p for p in Path(out).parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise TrainingError(f"--out {out}: {blocking} is a file, not a directory")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise TrainingError("engine.plot needs matplotlib: pip install -e \".[study]\" (or pip install matplotlib)")
    print(f"wrote {plot_runs(list(runs), Path(out), list(labels), x)}")


if __name__ == "__main__":
    main()
