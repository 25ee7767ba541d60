"""The scaling study: train a grid of (rule, batch size) runs and report them side by side.

    python -m validate.scaling --preset quick          # ~45 min on 2 CPU cores
    python -m validate.scaling --preset full --device cuda
    python -m validate.scaling --out DIR --report-only # rebuild table.md and scaling.png

Rules (rows of the table): the hyperparameter scaling rules of engine/scaling.py applied from the
base batch (none, sqrt, linear, cowclip), and the CowClip authors' ablations of validate/ablations.py
(cowclip_nocnt, cowclip_global, cowclip_field, cowclip_const), which take CowClip's scaled
hyperparameters (lr * sqrt(s), l2 * s, 1 warm-up epoch, r = 1) and change only the clip.
Every run of a grid trains the same number of epochs, so a batch s times larger makes s times
fewer updates: the "step budget" of each column is printed beside it.

Outputs in --out:
    results.jsonl   one line per finished run (config, test AUC and logloss, per-epoch AUC, steps,
                    wall time, samples/s, the clip audit by id frequency); a run whose line exists is
                    skipped, so an interrupted grid continues where it stopped
    runs/<key>/     each run's engine.train directory (config.json, metrics.jsonl, log.txt); a run cut
                    off mid-way resumes from its last checkpoint (written at every epoch's end)
    table.md        the paper-shaped tables: rows rules, columns batch sizes, cells AUC and the gap to
                    the `none` rule at the base batch; then wall times and the clip audit
    scaling.png     test AUC vs batch size per rule with the data's Bayes-optimal AUC, and wall time vs
                    batch size (needs matplotlib, an optional dependency)
"""
from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import click

from engine.scaling import RULES as SCALE_RULES
from engine.scaling import format_hyperparameters, scale_hyperparameters
from validate.ablations import ABLATIONS, CLIP_RULES, ClipTally, clip_rule

ALL_RULES = SCALE_RULES + ABLATIONS
ORDER = {rule: i for i, rule in enumerate(ALL_RULES)}

# Each preset: the synthetic data (rows, largest field vocabulary, test fraction), the batch sizes,
# the epochs, and one or more sub-grids (rules x embedding optimizers x init stddevs) trained in order.
# `regime` below labels how many updates each column gets; the paper's Criteo runs had ~2.7K updates
# at 128K (10 epochs of ~36M rows).
PRESETS = {
    # tests: seconds. A tiny vocabulary, so dense Adam over the table is cheap.
    "tiny": dict(rows=3_000, max_vocab=300, test_fraction=0.2, base_bs=256, batch_sizes=(256, 1024), epochs=1,
                 grids=[dict(rules=ALL_RULES, embed_optims=("dense",), init_stddevs=(1e-2,))]),
    # 2 CPU cores, under 45 minutes even with another job beside it (see validate/SCALING_NOTES.md):
    # base 256 instead of 1K so that the same 64x range of batch sizes keeps 4x more updates; every
    # rule and ablation with dense Adam, then the scaling rules with lazy Adam, then none and
    # cowclip from init_stddev 1e-4. A quarter of the rows is the test split, so that AUC
    # differences of a few 1e-3 are above the test set's noise.
    "quick": dict(rows=160_000, max_vocab=10_000, test_fraction=0.25, base_bs=256,
                  batch_sizes=(256, 1024, 4096, 16384), epochs=2,
                  grids=[dict(rules=ALL_RULES, embed_optims=("dense",), init_stddevs=(1e-2,)),
                         dict(rules=("none", "cowclip"), embed_optims=("lazy",), init_stddevs=(1e-2,)),
                         dict(rules=("none", "cowclip"), embed_optims=("dense",), init_stddevs=(1e-4,))]),
    # the paper's grid, for a GPU: a Criteo-Kaggle-sized synthetic set and the reference's 10 epochs.
    "full": dict(rows=40_000_000, max_vocab=300_000, test_fraction=0.1, base_bs=1024,
                 batch_sizes=(1024, 4096, 16384, 65536, 131072), epochs=10,
                 grids=[dict(rules=ALL_RULES, embed_optims=("dense", "lazy"), init_stddevs=(1e-2,)),
                        dict(rules=("none", "cowclip"), embed_optims=("dense",), init_stddevs=(1e-4,))]),
}


# --------------------------------------------------------------------------------------------
# the grid


def regime(steps: int) -> str:
    """A label for a run's number of updates (the thresholds are only names for orders of magnitude)."""
    if steps >= 1000:
        return "ample (>=1000 updates)"
    if steps >= 100:
        return "reduced (100-999 updates)"
    return "starved (<100 updates)"


def run_key(model: str, rule: str, bs: int, embed_optim: str, init_stddev: float) -> str:
    return f"{model}-{rule}-bs{bs}-{embed_optim}-init{init_stddev:g}"


def hyperparameters(rule: str, bs: int, base: dict) -> dict:
    """A grid rule -> engine hyperparameters: ablations take CowClip's scaled values."""
    return scale_hyperparameters("cowclip" if rule in ABLATIONS else rule, bs, base)


def read_results(path: Path) -> dict:
    """key -> result line of results.jsonl (a torn last line, from a kill mid-write, is ignored)."""
    results = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            results[record["key"]] = record
    return results


def _same_run(saved: dict, cfg) -> bool:
    keys = ("model", "bs", "epochs", "data", "hp", "embed_optim", "init_stddev", "seed", "clip_form", "base_bs")
    mine = asdict(cfg)
    return all(json.dumps(saved.get(k), sort_keys=True) == json.dumps(mine[k], sort_keys=True) for k in keys)


def _equivalent(record: dict, rule: str, bs: int, optim: str, init: float, hp: dict) -> bool:
    """Whether a finished run is the run (rule, bs, ...) would train: both without clipping, same numbers."""
    return (rule not in CLIP_RULES and record["rule"] not in CLIP_RULES and record["bs"] == bs
            and record["embed_optim"] == optim and record["init_stddev"] == init and record["hp"] == hp
            and "copied_from" not in record)


def train_one(cfg, rule: str, run_dir: Path, keep_checkpoint: bool) -> dict:
    """One run of the grid, resumed from its checkpoint if a previous invocation was cut off."""
    from dataio.reader import BatchReader
    from engine.train import run

    resume = False
    first_step = 0
    state = run_dir / "checkpoint" / "state.json"
    if state.exists() and (run_dir / "config.json").exists():
        if _same_run(json.loads((run_dir / "config.json").read_text()), cfg):
            resume, first_step = True, json.loads(state.read_text())["global_step"]
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    steps_per_epoch = BatchReader(cfg.data, "train", cfg.bs).steps_per_epoch
    tally = ClipTally(steps_per_epoch, first_step) if rule in CLIP_RULES else None
    clip = clip_rule(rule, tally) if rule in CLIP_RULES else clip_rule("cowclip")
    t0 = time.perf_counter()
    with open(run_dir / "log.txt", "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        final = run(cfg, run_dir, resume, clip_rule=clip)
    wall = time.perf_counter() - t0
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if line.startswith('{"type": "eval"')]
    if not keep_checkpoint:
        shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
    return {"final": final, "wall": wall, "steps_per_epoch": steps_per_epoch, "resumed": resume,
            "resumed_at_step": first_step, "auc_by_epoch": [e["auc"] for e in evals],
            "audit": tally.summary() if tally is not None else None}


def run_grid(grid: dict, out: Path, model: str, data: str, dataset: str, device: str, seed: int,
             keep_checkpoints: bool = False, max_runs: int = 0, echo=print) -> int:
    """Train every run of `grid` that results.jsonl lacks. -> number of runs trained now."""
    from engine.train import DATASET_BASES, RunConfig

    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    done = read_results(results_path)
    base = dict(DATASET_BASES[dataset], bs=grid["base_bs"])
    plan = [(init, optim, rule, bs) for sub in grid["grids"] for init in sub["init_stddevs"]
            for optim in sub["embed_optims"] for rule in sub["rules"] for bs in grid["batch_sizes"]]
    trained = 0
    for i, (init, optim, rule, bs) in enumerate(plan, start=1):
        key = run_key(model, rule, bs, optim, init)
        hp = hyperparameters(rule, bs, base)
        cfg = RunConfig(model=model, bs=bs, epochs=grid["epochs"], data=data, dataset=dataset, device=device,
                        seed=seed, hp=hp, scale_rule="cowclip" if rule in ABLATIONS else rule,
                        base_bs=grid["base_bs"], embed_optim=optim, clip_form="reference", embed_dim=10,
                        dropout=0.0, init_stddev=init, accum=1, eval_every=0, log_every=10 ** 9,
                        checkpoint_every=0, audit=False, split="rand", max_steps=0)
        if key in done:
            if done[key]["data"] != data or done[key]["epochs"] != grid["epochs"]:
                raise click.ClickException(
                    f"{results_path} has run {key} on {done[key]['data']} for {done[key]['epochs']} epochs, "
                    f"not on {data} for {grid['epochs']}: pass another --out for a different grid")
            continue
        twin = next((r for r in done.values() if _equivalent(r, rule, bs, optim, init, hp)), None)
        if twin is not None:  # e.g. none, sqrt and linear at the base batch: the same run, trained once
            record = dict(twin, key=key, rule=rule, copied_from=twin["key"])
            with open(results_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            done[key] = record
            echo(f"[{i}/{len(plan)}] {key}: the same run as {twin['key']} (identical hyperparameters, no clip)")
            continue
        if max_runs and trained >= max_runs:
            break
        echo(f"[{i}/{len(plan)}] {key}: {format_hyperparameters(hp)}")
        result = train_one(cfg, rule, out / "runs" / key, keep_checkpoints)
        final = result["final"]
        steps = final["steps"]
        record = {"key": key, "rule": rule, "bs": bs, "base_bs": grid["base_bs"], "embed_optim": optim,
                  "init_stddev": init, "model": model, "epochs": grid["epochs"], "data": data,
                  "dataset": dataset, "seed": seed, "hp": hp, "clip_form": cfg.clip_form,
                  "auc": final["auc"], "logloss": final["logloss"], "auc_by_epoch": result["auc_by_epoch"],
                  "bayes_auc": final.get("bayes_auc"), "bayes_logloss": final.get("bayes_logloss"),
                  "steps": steps, "steps_per_epoch": result["steps_per_epoch"],
                  "warmup_updates": int(hp["warmup"] * result["steps_per_epoch"]), "regime": regime(steps),
                  "wall_seconds": result["wall"], "train_samples_per_s": final["samples_per_s"],
                  "resumed": result["resumed"], "resumed_at_step": result["resumed_at_step"],
                  "clip_audit": result["audit"], "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with open(results_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        done[key] = record
        trained += 1
        echo(f"    test AUC {final['auc']:.5f}, logloss {final['logloss']:.5f}, {steps} steps, "
             f"{result['wall']:.0f} s, {final['samples_per_s']:,.0f} samples/s")
    return trained


# --------------------------------------------------------------------------------------------
# the report


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUC measured on `positives` + `negatives` rows."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc))
    return math.sqrt(var / (positives * negatives))


def bs_label(bs: int) -> str:
    return f"{bs // 1024}K" if bs % 1024 == 0 else str(bs)


def _groups(records: list) -> dict:
    groups = {}
    for r in records:
        groups.setdefault((r["model"], r["embed_optim"], r["init_stddev"]), []).append(r)
    return groups


def markdown_report(records: list, test_counts: tuple[int, int] | None = None) -> str:
    """The tables of table.md, one block per (model, embedding optimizer, init_stddev)."""
    lines = ["# Scaling study", ""]
    for (model, optim, init), group in sorted(_groups(records).items()):
        sizes = sorted({r["bs"] for r in group})
        rules = sorted({r["rule"] for r in group}, key=ORDER.get)
        cell = {(r["rule"], r["bs"]): r for r in group}
        base_bs = group[0]["base_bs"]
        baseline = cell.get(("none", base_bs))
        header = "| rule | " + " | ".join(bs_label(b) for b in sizes) + " |"
        rule_line = "|---|" + "---:|" * len(sizes)
        lines += [f"## {model}, embedding optimizer `{optim}`, init_stddev {init:g}", ""]
        lines += [f"Test AUC (gap to `none` at the base batch {bs_label(base_bs)}"
                  + (f", AUC {baseline['auc']:.4f}" if baseline else ", which is missing") + ")", ""]
        lines += [header, rule_line]
        for rule in rules:
            cells = []
            for bs in sizes:
                r = cell.get((rule, bs))
                if r is None:
                    cells.append("")
                elif baseline is None:
                    cells.append(f"{r['auc']:.4f}")
                else:
                    cells.append(f"{r['auc']:.4f} ({r['auc'] - baseline['auc']:+.4f})")
            lines.append(f"| {rule} | " + " | ".join(cells) + " |")
        steps = {bs: next(r for r in group if r["bs"] == bs) for bs in sizes}
        lines.append("| *updates per run* | " + " | ".join(f"{steps[b]['steps']:,}" for b in sizes) + " |")
        lines.append("| *step budget* | " + " | ".join(steps[b]["regime"].split(" (")[0] for b in sizes) + " |")
        bayes = group[0].get("bayes_auc")
        notes = []
        if bayes:
            notes.append(f"Bayes-optimal test AUC of the data: {bayes:.4f}.")
        if test_counts and baseline:
            se = auc_standard_error(baseline["auc"], *test_counts)
            notes.append(f"One test-set standard error of an AUC near {baseline['auc']:.3f} on this test split "
                         f"({test_counts[0]:,} positives, {test_counts[1]:,} negatives): {se:.4f} (Hanley-McNeil); "
                         f"runs share the test set, so gaps between them are less noisy than that, but one seed "
                         f"per cell says nothing about seed-to-seed spread.")
        notes.append(f"{group[0]['epochs']} epochs for every run; step budget: ample >= 1000 updates, "
                     f"reduced 100-999, starved < 100.")
        lines += ["", *notes, ""]

        lines += ["Wall time per run, seconds (training and per-epoch evaluation)", "", header, rule_line]
        for rule in rules:
            lines.append(f"| {rule} | " + " | ".join(
                f"{cell[(rule, b)]['wall_seconds']:.0f}" if (rule, b) in cell else "" for b in sizes) + " |")
        lines.append("")

        audited = [r for r in group if r.get("clip_audit")]
        if audited:
            buckets = []
            for r in audited:
                for label in r["clip_audit"]["all"]:
                    if label not in buckets:
                        buckets.append(label)
            buckets.sort(key=lambda s: int(s.split("-")[0]))
            lines += ["Clip audit: fraction of (update, id) pairs whose gradient the clip scaled down, by the id's "
                      "count cnt_k in the batch (all epochs; the first is CowClip's warm-up)", "",
                      "| rule | batch | all ids | " + " | ".join(f"cnt {b}" for b in buckets) + " |",
                      "|---|---:|---:|" + "---:|" * len(buckets)]
            for r in sorted(audited, key=lambda r: (ORDER[r["rule"]], r["bs"])):
                audit = r["clip_audit"]["all"]
                lines.append(f"| {r['rule']} | {bs_label(r['bs'])} | {r['clip_audit']['clipped_fraction']:.3f} | "
                             + " | ".join(f"{audit[b]['clipped_fraction']:.3f}" if b in audit else ""
                                          for b in buckets) + " |")
            lines.append("")
    return "\n".join(lines)


def plot_report(records: list, path: Path) -> bool:
    """scaling.png: per (model, optimizer, init) a row of two panels. -> False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    groups = sorted(_groups(records).items())
    fig, axes = plt.subplots(len(groups), 2, figsize=(12, 4.2 * len(groups)), squeeze=False)
    colors = plt.get_cmap("tab10")
    for row, ((model, optim, init), group) in enumerate(groups):
        auc_ax, time_ax = axes[row]
        for rule in sorted({r["rule"] for r in group}, key=ORDER.get):
            points = sorted((r["bs"], r["auc"], r["wall_seconds"]) for r in group if r["rule"] == rule)
            bs, auc, wall = zip(*points)
            style = dict(color=colors(ORDER[rule]), marker="o", linestyle="-" if rule in SCALE_RULES else "--",
                         label=rule)
            auc_ax.plot(bs, auc, **style)
            time_ax.plot(bs, wall, **style)
        bayes = group[0].get("bayes_auc")
        if bayes:
            auc_ax.axhline(bayes, color="black", linestyle=":", label=f"Bayes-optimal {bayes:.4f}")
        sizes = sorted({r["bs"] for r in group})
        for ax, ylabel in ((auc_ax, "test AUC"), (time_ax, "wall time per run (s)")):
            ax.set_xscale("log", base=2)
            ax.set_xticks(sizes, [bs_label(b) for b in sizes])
            ax.set_xlabel("batch size")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        time_ax.set_yscale("log")
        auc_ax.set_title(f"{model}, {optim} embedding Adam, init {init:g}: test AUC")
        time_ax.set_title(f"training time, {group[0]['epochs']} epochs")
        auc_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(out: Path, echo=print) -> None:
    from dataio.reader import read_split

    records = list(read_results(out / "results.jsonl").values())
    if not records:
        echo(f"no results in {out / 'results.jsonl'} yet")
        return
    test_counts = None
    try:
        label = read_split(records[0]["data"], "test")["label"]
        test_counts = (int(label.sum()), int(label.shape[0] - label.sum()))
    except (OSError, ValueError, KeyError):
        pass
    (out / "table.md").write_text(markdown_report(records, test_counts))
    echo(f"wrote {out / 'table.md'}")
    if plot_report(records, out / "scaling.png"):
        echo(f"wrote {out / 'scaling.png'}")
    else:
        echo("matplotlib is not installed (pip install matplotlib): no plot")


# --------------------------------------------------------------------------------------------
# the command line


def _list(text: str | None, cast):
    return None if text is None else tuple(cast(x) for x in text.split(",") if x.strip())


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--preset", default="quick", show_default=True, type=click.Choice(list(PRESETS)))
@click.option("--out", default=None, help="output directory (default runs/scaling-<preset>)")
@click.option("--model", default="deepfm", show_default=True)
@click.option("--data", default=None, help="dataset directory; default: a synthetic set of the preset's size")
@click.option("--dataset", default=None, help="criteo_kaggle | avazu | synthetic: the base hyperparameters")
@click.option("--rows", default=None, type=int, help="synthetic rows (default: the preset's)")
@click.option("--max-vocab", default=None, type=int, help="synthetic largest field vocabulary (default: the preset's)")
@click.option("--cache", default=None, help="where synthetic sets are generated (default $COWCLIP_CACHE or "
                                             "~/.cache/cowclip-engine)")
@click.option("--batch-sizes", default=None, help="comma-separated, e.g. 1024,4096 (default: the preset's)")
@click.option("--base-bs", default=None, type=int, help="the batch the rules scale from (default: the preset's)")
@click.option("--rules", default=None, help=f"comma-separated subset of {','.join(ALL_RULES)}")
@click.option("--embed-optim", default=None, help="comma-separated subset of dense,lazy")
@click.option("--init-stddev", default=None, help="comma-separated embedding init stddevs, e.g. 1e-2,1e-4")
@click.option("--epochs", default=None, type=int, help="epochs of every run (default: the preset's)")
@click.option("--seed", default=1235, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--max-runs", default=0, type=int, help="stop after training this many new runs (0: all)")
@click.option("--keep-checkpoints", is_flag=True, help="keep each finished run's checkpoint")
@click.option("--report-only", is_flag=True, help="only rebuild table.md and scaling.png from results.jsonl")
def main(preset, out, model, data, dataset, rows, max_vocab, cache, batch_sizes, base_bs, rules, embed_optim,
         init_stddev, epochs, seed, device, max_runs, keep_checkpoints, report_only):
    """Train a grid of scaling rules x batch sizes and report them side by side."""
    from dataio.meta import load_meta
    from models import canonical_model_name

    out = Path(out or f"runs/scaling-{preset}")
    if report_only:
        write_report(out, click.echo)
        return
    grid = dict(PRESETS[preset])
    overrides = {"batch_sizes": _list(batch_sizes, int), "epochs": epochs, "base_bs": base_bs, "rows": rows,
                 "max_vocab": max_vocab}
    grid.update({k: v for k, v in overrides.items() if v is not None})
    sub = {"rules": _list(rules, str), "embed_optims": _list(embed_optim, str),
           "init_stddevs": _list(init_stddev, float)}
    if any(v is not None for v in sub.values()):  # one sub-grid; what is not given comes from the first
        grid["grids"] = [{k: v if v is not None else grid["grids"][0][k] for k, v in sub.items()}]
    for g in grid["grids"]:
        unknown = set(g["rules"]) - set(ALL_RULES)
        if unknown:
            raise click.BadParameter(f"unknown rules {sorted(unknown)}; choose from {ALL_RULES}", param_hint="--rules")
        if set(g["embed_optims"]) - {"dense", "lazy"}:
            raise click.BadParameter("choose from dense,lazy", param_hint="--embed-optim")
    try:
        model = canonical_model_name(model)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--model")
    if data is None:
        from dataio.synthetic import ensure_default

        click.echo(f"data: synthetic, {grid['rows']:,} rows, largest vocabulary {grid['max_vocab']:,} "
                   f"(generated once into the cache)")
        data = str(ensure_default(cache, rows=grid["rows"], max_vocab=grid["max_vocab"],
                                  test_fraction=grid["test_fraction"]))
        dataset = dataset or "synthetic"
    dataset = (dataset or "criteo_kaggle").lower()
    meta = load_meta(data)
    train_rows = meta["splits"]["train"]["rows"]
    usable = tuple(b for b in grid["batch_sizes"] if b <= train_rows)
    if usable != tuple(grid["batch_sizes"]):
        click.echo(f"skipping batch sizes above the {train_rows:,} training rows: "
                   f"{sorted(set(grid['batch_sizes']) - set(usable))}")
    grid["batch_sizes"] = usable
    click.echo(f"data {data}: {train_rows:,} training rows; batches {','.join(map(str, usable))} from base "
               f"{grid['base_bs']}; {grid['epochs']} epochs")
    for g in grid["grids"]:
        click.echo(f"  rules {','.join(g['rules'])} with {','.join(g['embed_optims'])} embedding Adam, "
                   f"init_stddev {','.join(f'{x:g}' for x in g['init_stddevs'])}")
    started = time.perf_counter()
    trained = run_grid(grid, out, model, data, dataset, device, seed, keep_checkpoints, max_runs, click.echo)
    click.echo(f"trained {trained} new runs in {time.perf_counter() - started:.0f} s; results in {out / 'results.jsonl'}")
    write_report(out, click.echo)


if __name__ == "__main__":
    from engine.runtime import configure_process

    configure_process()   # keep freed memory, quiet Numba threads (engine/runtime.py)
    sys.exit(main())
