"""Learning curves of one or more runs, overlaid, into a PNG.

    python -m engine.plot runs/deepfm-bs131072-... [RUN ...] --out curves.png

Three panels from each run's metrics.jsonl: the training loss of every logged step, and the test
AUC and logloss of every evaluation, against the global step. Each run is one colour, labelled by
its directory name (or --label, once per run).
"""
import json
from pathlib import Path

import click

from engine.run.errors import TrainingError


def read_curves(run_dir: Path) -> dict:
    """RUN/metrics.jsonl -> {"step": ([step], [loss]), "eval": ([step], [auc], [logloss])}."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise TrainingError(f"{path}: not found; is {run_dir} a run directory of engine.train?")
    steps, evals = ([], []), ([], [], [])
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise TrainingError(f"{path}, line {number}: not JSON ({error})")
        if record.get("type") == "step":
            steps[0].append(record["step"])
            steps[1].append(record["loss"])
        elif record.get("type") == "eval":
            evals[0].append(record["step"])
            evals[1].append(record["auc"])
            evals[2].append(record["logloss"])
    if not steps[0] and not evals[0]:
        raise TrainingError(f"{path}: no logged steps or evaluations to plot")
    return {"step": steps, "eval": evals}


def plot_runs(run_dirs: list, out: Path, labels: list | None = None) -> Path:
    """Draw the curves of `run_dirs` into the PNG `out`. -> out."""
    import matplotlib

    matplotlib.use("Agg")   # files only, no display needed
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_auc, ax_logloss) = plt.subplots(1, 3, figsize=(15, 4.2))
    for i, run_dir in enumerate(run_dirs):
        curves = read_curves(run_dir)
        label = labels[i] if labels else Path(run_dir).name
        color = f"C{i % 10}"
        ax_loss.plot(*curves["step"], color=color, linewidth=1, label=label)
        eval_steps, aucs, loglosses = curves["eval"]
        ax_auc.plot(eval_steps, aucs, color=color, marker="o", label=label)
        ax_logloss.plot(eval_steps, loglosses, color=color, marker="o", label=label)
    for ax, title in ((ax_loss, "training loss (logged steps)"), (ax_auc, "test AUC"),
                      (ax_logloss, "test logloss")):
        ax.set_title(title)
        ax.set_xlabel("global step")
        ax.grid(alpha=0.3)
    ax_auc.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="the PNG to write")
@click.option("--label", "labels", multiple=True, help="a legend label per run, in order (default: directory names)")
def main(runs, out, labels):
    """Draw the learning curves of training runs (train loss, test AUC and logloss) into a PNG."""
    if labels and len(labels) != len(runs):
        raise TrainingError(f"--label given {len(labels)} times for {len(runs)} runs; give one per run or none")
    if Path(out).suffix.lower() != ".png":
        raise TrainingError(f"--out {out}: the file name must end in .png")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise TrainingError("engine.plot needs matplotlib: pip install matplotlib")
    print(f"wrote {plot_runs(list(runs), Path(out), list(labels))}")


if __name__ == "__main__":
    main()
