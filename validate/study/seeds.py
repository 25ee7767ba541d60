"""Pool one scaling grid trained at several seeds: is a gap to the baseline real, and is it within a tolerance?

    python -m validate.study.seeds runs/grid-seed1 runs/grid-seed2 runs/grid-seed3 [--tol 0.001] [--out seeds.md]

Each directory is a `validate.study.scaling --out` of the same grid (same data, epochs, base batch) at
other `--seed`s; a directory may itself hold several seeds (the gpu preset's 128K cells), but a
(cell, seed) may be counted once. One run per cell cannot say whether CowClip "stays within 0.001" of the baseline:
on the 4M-row synthetic set the seed alone moves a cell by up to 0.005 AUC (validate/SCALING_NOTES.md).
This report gives, per (rule, batch):

    mean AUC +- sample standard deviation over the seeds, n seeds
    gap_i = AUC(rule, batch, seed i) - AUC(none, base batch, seed i)    paired by seed: the seed's
            initial weights are shared by both runs, so pairing removes what they move in common
    mean gap and its 95 % Student-t interval, mean +- t(n-1) * sd(gap) / sqrt(n)
    verdict against --tol: "within" if the whole interval is >= -tol, "not within" if the whole
            interval is < -tol, else "undecided" (always so with one seed)
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

import click

from validate.study.scaling import ORDER, bs_label, grid_difference, read_results, result_field

# Two-sided 95 % quantiles of Student's t, by degrees of freedom (any statistics table).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
       10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}

# What must agree between the directories for their runs to be the same cell at another seed:
# validate.study.scaling's GRID_FIELDS (data, epochs, base batch, clip form, ...) and the model.


def t95(df: int) -> float:
    """The quantile for df degrees of freedom; between table entries the next smaller df's (wider)."""
    if df < 1:
        raise ValueError("a t interval needs at least 2 seeds")
    if df > 30:
        return 1.96 + 2.4 / df  # within 0.003 of the exact quantile above 30
    return T95[max(d for d in T95 if d <= df)]


def load_seeded(dirs: list[Path]) -> list[dict]:
    """The result lines of every directory, checked to be one grid, each seed in one directory only."""
    records, seen = [], {}
    grid = None
    for d in dirs:
        path = Path(d) / "results.jsonl"
        if not path.exists():
            raise click.ClickException(f"{path}: no such file (is {d} a validate.study.scaling --out directory?)")
        lines = list(read_results(path).values())
        if not lines:
            raise click.ClickException(f"{path}: no finished runs")
        for seed in sorted({r["seed"] for r in lines}):
            if seed in seen:
                raise click.ClickException(f"{d} and {seen[seed]} both hold seed {seed}: each seed must count once")
            seen[seed] = d
        for r in lines:
            if grid is None:
                grid = (r, path)
            differ = grid_difference(grid[0], r) + (["model"] if r["model"] != grid[0]["model"] else [])
            if differ:
                diff = ", ".join(f"{k} {result_field(grid[0], k)!r} vs {result_field(r, k)!r}" for k in differ)
                raise click.ClickException(f"{path} is not the grid of {grid[1]}: {diff}")
            records.append(r)
    return records


def pooled_cells(records: list[dict]) -> dict:
    """(model, embed_optim, init_stddev) -> {(rule, bs): {seed: auc}}."""
    groups = {}
    for r in records:
        cells = groups.setdefault((r["model"], r["embed_optim"], r["init_stddev"]), {})
        cells.setdefault((r["rule"], r["bs"]), {})[r["seed"]] = r["auc"]
    return groups


def baseline_copies(records: list[dict]) -> set:
    """(model, embed_optim, init_stddev, rule, bs) of cells that are the baseline run itself (e.g. sqrt
    and linear at the base batch, which validate.study.scaling trains once as `none`): no gap to report."""
    return {(r["model"], r["embed_optim"], r["init_stddev"], r["rule"], r["bs"])
            for r in records if r.get("copied_from") and r["bs"] == r["base_bs"]}


def gap_summary(aucs: dict, baseline: dict, tol: float) -> dict:
    """Paired gaps over the seeds both cells have -> n, mean, sd, 95 % interval, verdict."""
    gaps = [aucs[s] - baseline[s] for s in sorted(aucs) if s in baseline]
    n = len(gaps)
    if n == 0:
        return {"n": 0}
    mean = statistics.fmean(gaps)
    if n == 1:
        return {"n": 1, "mean": mean, "sd": None, "lo": None, "hi": None, "verdict": "undecided (1 seed)"}
    sd = statistics.stdev(gaps)
    half = t95(n - 1) * sd / math.sqrt(n)
    lo, hi = mean - half, mean + half
    verdict = "within" if lo >= -tol else "not within" if hi < -tol else "undecided"
    return {"n": n, "mean": mean, "sd": sd, "lo": lo, "hi": hi, "verdict": verdict}


def seeds_report(records: list[dict], tol: float) -> str:
    seeds = sorted({r["seed"] for r in records})
    lines = ["# Scaling grid pooled over seeds", "", f"Seeds: {', '.join(map(str, seeds))}.", ""]
    base_bs = records[0]["base_bs"]
    copies = baseline_copies(records)
    for (model, optim, init), cells in sorted(pooled_cells(records).items()):
        baseline = cells.get(("none", base_bs))
        sizes = sorted({bs for _, bs in cells})
        rules = sorted({rule for rule, _ in cells}, key=ORDER.get)
        lines += [f"## {model}, embedding optimizer `{optim}`, init_stddev {init:g}", "",
                  "Test AUC, mean +- standard deviation over seeds (n)", "",
                  "| rule | " + " | ".join(bs_label(b) for b in sizes) + " |", "|---|" + "---:|" * len(sizes)]
        for rule in rules:
            row = []
            for bs in sizes:
                aucs = list(cells.get((rule, bs), {}).values())
                if not aucs:
                    row.append("")
                elif len(aucs) == 1:
                    row.append(f"{aucs[0]:.4f} (1)")
                else:
                    row.append(f"{statistics.fmean(aucs):.4f} +- {statistics.stdev(aucs):.4f} ({len(aucs)})")
            lines.append(f"| {rule} | " + " | ".join(row) + " |")
        lines.append("")
        if baseline is None:
            lines += [f"No `none` run at the base batch {bs_label(base_bs)}: no gaps.", ""]
            continue
        lines += [f"Gap to `none` at {bs_label(base_bs)}, paired by seed: mean [95 % t interval], "
                  f"and whether the gap stays within {tol:g}", "",
                  "| rule | batch | seeds | mean gap | sd of gap | 95 % interval | within |",
                  "|---|---:|---:|---:|---:|---|---|"]
        for rule in rules:
            for bs in sizes:
                if (rule, bs) not in cells or (rule == "none" and bs == base_bs) \
                        or (model, optim, init, rule, bs) in copies:
                    continue
                g = gap_summary(cells[(rule, bs)], baseline, tol)
                if g["n"] == 0:
                    continue
                if g["n"] == 1:
                    lines.append(f"| {rule} | {bs_label(bs)} | 1 | {g['mean']:+.4f} | | | {g['verdict']} |")
                else:
                    lines.append(f"| {rule} | {bs_label(bs)} | {g['n']} | {g['mean']:+.4f} | {g['sd']:.4f} | "
                                 f"[{g['lo']:+.4f}, {g['hi']:+.4f}] | {g['verdict']} |")
        lines.append("")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--tol", default=1e-3, show_default=True, help="the AUC loss that still counts as 'within'")
@click.option("--out", default=None, help="also write the report to this file")
def main(dirs, tol, out):
    """Pool validate.study.scaling grids run at different seeds into mean, spread and paired gaps."""
    report = seeds_report(load_seeded([Path(d) for d in dirs]), tol)
    click.echo(report)
    if out:
        Path(out).write_text(report + "\n")


if __name__ == "__main__":
    main()
