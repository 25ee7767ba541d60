"""The scaling study: train a grid of (rule, batch size) runs and report them side by side.

    python -m validate.study.scaling --preset quick          # ~45 min on 2 CPU cores
    python -m validate.study.scaling --preset gpu --device cuda   # 8 min of H200 time (validate/study/budget.py)
    python -m validate.study.scaling --preset full --device cuda
    python -m validate.study.scaling --out DIR --report-only # rebuild table.md and scaling.png

Rules (rows of the table): the hyperparameter scaling rules of engine/scaling.py applied from the
base batch (none, sqrt, linear, cowclip), and the CowClip authors' ablations of validate/study/ablations.py
(cowclip_nocnt, cowclip_global, cowclip_field, cowclip_const), which take CowClip's scaled
hyperparameters (lr * sqrt(s), l2 * s, 1 warm-up epoch, r = 1) and change only the clip; and
`cowclip_noclip`, CowClip's hyperparameters with the clip off (r = 0), which separates what the
clip does from what the hyperparameter rule does.
Every run of a grid trains the same number of epochs (under the gpu preset's budget, possibly the
same share of one epoch), so a batch s times larger makes s times fewer updates: the "step
budget" of each column is printed beside it.

Outputs in --out:
    results.jsonl   one line per finished run (every setting that changes its result, test AUC and
                    logloss after each epoch, the best epoch, updates, wall time, samples/s, the clip
                    audit); a run whose line exists is skipped, so an interrupted grid continues where
                    it stopped. A directory holds one grid (data, epochs, base batch, clip form, ...):
                    another grid is refused; other seeds of it are kept beside each other. A torn
                    last line (a kill mid-write) is moved to results.jsonl.torn before appending.
    runs/<key>/     each run's engine.train directory (config.json, metrics.jsonl, log.txt); a run cut
                    off mid-way resumes from its last checkpoint (written at every epoch's end)
    table.md        the paper-shaped tables: rows rules, columns batch sizes, cells AUC (mean over
                    seeds) and the gap to the `none` rule at the base batch; the gap at the largest
                    batch per rule with its 95 % t interval (paired by seed, validate.study.seeds); then
                    wall times and the clip audit
    scaling.png     the AUC gap to the base-batch baseline vs batch size per rule, and wall time vs
                    batch size (needs matplotlib, an optional dependency)
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import click

from engine.scaling import RULES as SCALE_RULES
from engine.scaling import format_hyperparameters, scale_hyperparameters
from validate.study.ablations import ABLATIONS, CLIP_RULES, ClipTally, clip_rule

# CowClip's hyperparameter rule (lr * sqrt(s), l2 * s, 1 warm-up epoch) with the clip off
NOCLIP_RULES = ("cowclip_noclip",)
ALL_RULES = SCALE_RULES + NOCLIP_RULES + ABLATIONS
ORDER = {rule: i for i, rule in enumerate(ALL_RULES)}
GPU_RULES = SCALE_RULES + NOCLIP_RULES

# Each preset: the synthetic data (rows, largest field vocabulary, test fraction), the batch sizes,
# the epochs, and one or more sub-grids (rules x embedding optimizers x init stddevs) trained in order.
# A sub-grid may name its own batch sizes ("base": the base batch, "largest": the largest) and a seed
# offset (added to --seed), so that some cells get a second seed.
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
                  grids=[dict(rules=SCALE_RULES + ABLATIONS, embed_optims=("dense",), init_stddevs=(1e-2,)),
                         dict(rules=("none", "cowclip"), embed_optims=("lazy",), init_stddevs=(1e-2,)),
                         dict(rules=("none", "cowclip"), embed_optims=("dense",), init_stddevs=(1e-4,))]),
    # One device call on an H200 (issue 18): a Criteo-sized synthetic set (40M rows, 26 fields), the
    # reference's Criteo base at 1K, dense-table Adam, the four rules and cowclip_noclip at 1K..128K;
    # a second seed for every 128K cell and for the 1K baseline they are paired with. Epochs: none
    # fixed; validate/study/budget.py fits the grid into budget_s of H200 time (8 minutes) from the measured
    # step times, and prints how. At 36M training rows and Criteo's V = 33.8M (whose dense-table Adam
    # adds 10.9 ms a step) one full epoch of this grid is about 60 minutes (the four 1K runs are 78 % of
    # it), so the 8 minutes buy one pass over a tenth of the training rows for every run; --epochs N
    # overrides the plan (N full epochs).
    "gpu": dict(rows=40_000_000, vocab="criteo", max_vocab=300_000, test_fraction=0.1, base_bs=1024,
                batch_sizes=(1024, 8192, 32768, 131072), epochs=None, budget_s=480.0,
                grids=[dict(rules=GPU_RULES, embed_optims=("dense",), init_stddevs=(1e-2,)),
                       dict(rules=("none",), embed_optims=("dense",), init_stddevs=(1e-2,), batch_sizes="base",
                            seed_offset=1),
                       dict(rules=GPU_RULES, embed_optims=("dense",), init_stddevs=(1e-2,), batch_sizes="largest",
                            seed_offset=1)]),
    # the paper's grid, for a GPU: a Criteo-Kaggle-sized synthetic set and the reference's 10 epochs.
    "full": dict(rows=40_000_000, max_vocab=300_000, test_fraction=0.1, base_bs=1024,
                 batch_sizes=(1024, 4096, 16384, 65536, 131072), epochs=10,
                 grids=[dict(rules=ALL_RULES, embed_optims=("dense", "lazy"), init_stddevs=(1e-2,)),
                        dict(rules=("none", "cowclip"), embed_optims=("dense",), init_stddevs=(1e-4,))]),
}

# The settings a directory's runs all share: one grid per --out. A call that asks for another value
# is refused (the seed is not among them: seeds of one grid may share a directory).
GRID_FIELDS = ("data", "data_id", "dataset", "epochs", "train_fraction", "base_bs", "clip_form", "embed_dim",
               "dropout")
# Everything else that changes a run's result; with GRID_FIELDS, the identity of a run.
RUN_FIELDS = ("model", "rule", "bs", "embed_optim", "init_stddev", "seed", "hp")
# Values for result lines written before a field existed.
LEGACY_DEFAULTS = {"train_fraction": 1.0, "embed_dim": 10, "dropout": 0.0, "data_id": None}


# --------------------------------------------------------------------------------------------
# the data


def synthetic_data(cache: str | None, rows: int, max_vocab: int, test_fraction: float,
                   vocab: str = "geomspace") -> str:
    """The grid's synthetic set (Criteo's 26 sparse and 13 dense fields, the planted model of
    dataio.synthetic, Bayes-optimal test AUC in meta.json), generated once into the cache by the
    parallel chunked generator. vocab "criteo": Criteo Kaggle's 26 vocabulary sizes (V = 33.8M);
    "geomspace": log-spaced sizes up to max_vocab (the built-in set's shape)."""
    from dataio.synthetic import ensure_default

    shape = {"vocab": "criteo"} if vocab == "criteo" else {"max_vocab": max_vocab}
    return str(ensure_default(cache, rows=rows, test_fraction=test_fraction, **shape))


def data_id(meta: dict) -> str | None:
    """A fingerprint of the data's content: the generator's config hash, or the source file's checksum."""
    return meta.get("planted", {}).get("config_hash") or (meta.get("source") or {}).get("sha256")


# --------------------------------------------------------------------------------------------
# the grid


def regime(steps: int) -> str:
    """A label for a run's number of updates (the thresholds are only names for orders of magnitude)."""
    if steps >= 1000:
        return "ample (>=1000 updates)"
    if steps >= 100:
        return "reduced (100-999 updates)"
    return "starved (<100 updates)"


def run_key(model: str, rule: str, bs: int, embed_optim: str, init_stddev: float, seed: int) -> str:
    """The run's name in results.jsonl and under runs/ (the grid's shared settings are the directory's)."""
    return f"{model}-{rule}-bs{bs}-{embed_optim}-init{init_stddev:g}-seed{seed}"


def hyperparameters(rule: str, bs: int, base: dict) -> dict:
    """A grid rule -> engine hyperparameters: ablations take CowClip's scaled values, and
    cowclip_noclip takes them with the clip off."""
    if rule in NOCLIP_RULES:
        return dict(scale_hyperparameters("cowclip", bs, base), clip=0.0)
    return scale_hyperparameters("cowclip" if rule in ABLATIONS else rule, bs, base)


def result_field(record: dict, name: str):
    return record.get(name, LEGACY_DEFAULTS.get(name))


def run_identity(record: dict) -> str:
    """Every setting that changes a run's result, as one comparable string. The data's fingerprint is
    left out (lines written before it was recorded lack it); check_same_grid holds a directory to one."""
    return json.dumps({k: result_field(record, k) for k in GRID_FIELDS + RUN_FIELDS if k != "data_id"},
                      sort_keys=True)


def repair_results(path: Path) -> bytes | None:
    """Make results.jsonl end with a newline before anything is appended. A last line without one was
    torn by a kill mid-write: it is moved to results.jsonl.torn (a complete record just gets its
    newline). -> the bytes moved aside, or None."""
    if not path.exists():
        return None
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return None
    cut = data.rfind(b"\n") + 1
    tail = data[cut:]
    try:
        json.loads(tail)
        with open(path, "ab") as f:
            f.write(b"\n")
        return None
    except ValueError:
        pass
    with open(path.with_name(path.name + ".torn"), "ab") as f:
        f.write(tail + b"\n")
    with open(path, "r+b") as f:
        f.truncate(cut)
    return tail


def append_result(path: Path, record: dict) -> None:
    """One line, written at once and flushed to disk, so that a kill tears at most this line."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


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


def grid_difference(a: dict, b: dict) -> list:
    """The GRID_FIELDS in which two result lines (or settings) differ; a data fingerprint missing from
    either (lines written before it was recorded) is not a difference."""
    return [k for k in GRID_FIELDS if json.dumps(result_field(a, k)) != json.dumps(result_field(b, k))
            and not (k == "data_id" and None in (result_field(a, k), result_field(b, k)))]


def check_same_grid(done: dict, mine: dict, path: Path) -> None:
    """Refuse to add runs of another grid to a directory (issue 19, case 16)."""
    for record in done.values():
        differ = grid_difference(record, mine)
        if differ:
            what = ", ".join(f"{k} {result_field(record, k)!r} (asked: {mine[k]!r})" for k in differ)
            raise click.ClickException(f"{path} holds another grid ({what}); a directory holds one grid, "
                                       f"its seeds may differ: pass another --out")


def _same_run(saved: dict, cfg) -> bool:
    # max_steps is not among them: it says where a run stops, not what its steps are
    keys = ("model", "bs", "epochs", "data", "hp", "embed_optim", "init_stddev", "seed", "clip_form", "base_bs",
            "embed_dim", "dropout")
    mine = asdict(cfg)
    return all(json.dumps(saved.get(k), sort_keys=True) == json.dumps(mine[k], sort_keys=True) for k in keys)


def _equivalent(record: dict, rule: str, identity: dict) -> bool:
    """Whether a finished run is the run `identity` describes: both without clipping, same numbers."""
    return (rule not in CLIP_RULES and record["rule"] not in CLIP_RULES and "copied_from" not in record
            and all(json.dumps(result_field(record, k), sort_keys=True) == json.dumps(identity[k], sort_keys=True)
                    for k in GRID_FIELDS + RUN_FIELDS if k != "rule"))


def train_one(cfg, rule: str, run_dir: Path, keep_checkpoint: bool) -> dict:
    """One run of the grid, resumed from its checkpoint if a previous invocation was cut off."""
    from dataio.reader import BatchReader
    from engine.train import run

    resume = False
    first_step = 0
    state = run_dir / "checkpoint" / "state.json"
    if state.exists() and (run_dir / "config.json").exists():
        at = json.loads(state.read_text())["global_step"]
        if _same_run(json.loads((run_dir / "config.json").read_text()), cfg) and not (cfg.max_steps and
                                                                                      at >= cfg.max_steps):
            resume, first_step = True, at
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    steps_per_epoch = BatchReader(cfg.data, "train", cfg.bs).steps_per_epoch
    # The clip rule of engine.step (validate/study/ablations.py): the one place the grid chooses it.
    clipped = rule in CLIP_RULES and cfg.hp["clip"] > 0
    tally = ClipTally(steps_per_epoch, first_step) if clipped else None
    clip = clip_rule(rule, tally) if clipped else clip_rule("cowclip")
    t0 = time.perf_counter()
    with open(run_dir / "log.txt", "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        final = run(cfg, run_dir, resume, clip_rule=clip)
    wall = time.perf_counter() - t0
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if line.startswith('{"type": "eval"')]
    if not keep_checkpoint:
        shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
    return {"final": final, "wall": wall, "steps_per_epoch": steps_per_epoch, "resumed": resume,
            "resumed_at_step": first_step, "evals": evals,
            "audit": tally.summary() if tally is not None else unclipped_audit(final["steps"])}


def unclipped_audit(updates: int) -> dict:
    """The clip audit of a run with r = 0: engine.step calls no clip, so every (update, id) pair keeps
    scale 1 and the share clipped is 0 by construction (computed, not tallied: no hook sees the ids)."""
    return {"clipped_fraction": 0.0, "clip": "off", "updates": int(updates), "all": {}, "by_epoch": {}}


def epoch_curve(evals: list) -> dict:
    """Per-evaluation AUC and logloss of a run (metrics.jsonl "eval" lines), and its best epoch by AUC."""
    aucs = [e["auc"] for e in evals]
    best = max(range(len(aucs)), key=aucs.__getitem__) if aucs else None
    return {"auc_by_epoch": aucs, "logloss_by_epoch": [e["logloss"] for e in evals],
            "step_by_epoch": [e["step"] for e in evals],
            "best_epoch": evals[best]["epoch"] if best is not None else None,
            "best_auc": aucs[best] if best is not None else None,
            "best_logloss": evals[best]["logloss"] if best is not None else None}


def grid_plan(grid: dict, seed: int) -> list:
    """The runs of `grid`, in order: [(init_stddev, embed_optim, rule, bs, seed)]."""
    plan = []
    for sub in grid["grids"]:
        sizes = sub.get("batch_sizes", grid["batch_sizes"])
        if sizes == "base":
            sizes = (grid["base_bs"],)
        elif sizes == "largest":
            sizes = (max(grid["batch_sizes"]),)
        sizes = [bs for bs in sizes if bs in grid["batch_sizes"]]
        plan += [(init, optim, rule, bs, seed + sub.get("seed_offset", 0)) for init in sub["init_stddevs"]
                 for optim in sub["embed_optims"] for rule in sub["rules"] for bs in sizes]
    return plan


def run_grid(grid: dict, out: Path, model: str, data: str, dataset: str, device: str, seed: int,
             keep_checkpoints: bool = False, max_runs: int = 0, echo=print) -> int:
    """Train every run of `grid` that results.jsonl lacks. -> number of runs trained now.

    grid["train_fraction"] < 1 (the gpu preset's budget): each run stops after that share of one epoch."""
    from dataio.meta import load_meta
    from dataio.reader import BatchReader
    from engine.run.config import RunConfig
    from engine.scaling import DATASET_BASES

    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    torn = repair_results(results_path)
    if torn is not None:
        echo(f"{results_path}: its last line was torn (a kill mid-write); moved {len(torn)} bytes to "
             f"{results_path.name}.torn, that run trains again")
    done = read_results(results_path)
    fraction = grid.get("train_fraction", 1.0)
    meta = load_meta(data)
    shared = {"data": data, "data_id": data_id(meta), "dataset": dataset, "epochs": grid["epochs"],
              "train_fraction": fraction, "base_bs": grid["base_bs"], "clip_form": "reference", "embed_dim": 10,
              "dropout": 0.0}
    check_same_grid(done, shared, results_path)
    by_identity = {run_identity(r): r for r in done.values()}
    base = dict(DATASET_BASES[dataset], bs=grid["base_bs"])
    plan = grid_plan(grid, seed)
    trained = 0
    for i, (init, optim, rule, bs, run_seed) in enumerate(plan, start=1):
        key = run_key(model, rule, bs, optim, init, run_seed)
        hp = hyperparameters(rule, bs, base)
        identity = dict(shared, model=model, rule=rule, bs=bs, embed_optim=optim, init_stddev=init, seed=run_seed,
                        hp=hp)
        if run_identity(identity) in by_identity:
            continue
        steps_per_epoch = BatchReader(data, "train", bs).steps_per_epoch
        max_steps = 0 if fraction >= 1.0 else max(1, math.floor(fraction * steps_per_epoch))
        cfg = RunConfig(model=model, bs=bs, epochs=grid["epochs"], data=data, dataset=dataset, device=device,
                        seed=run_seed, hp=hp, scale_rule="cowclip" if rule in ABLATIONS + NOCLIP_RULES else rule,
                        base_bs=grid["base_bs"], embed_optim=optim, clip_form=shared["clip_form"],
                        embed_dim=shared["embed_dim"], dropout=shared["dropout"], init_stddev=init, accum=1,
                        eval_every=0, log_every=10 ** 9, checkpoint_every=0, audit=False, split="rand",
                        max_steps=max_steps)
        twin = next((r for r in done.values() if _equivalent(r, rule, identity)), None)
        if twin is not None:  # e.g. none, sqrt and linear at the base batch: the same run, trained once
            record = dict(twin, key=key, rule=rule, copied_from=twin["key"])
            append_result(results_path, record)
            done[key] = by_identity[run_identity(record)] = record
            echo(f"[{i}/{len(plan)}] {key}: the same run as {twin['key']} (identical hyperparameters, no clip)")
            continue
        if max_runs and trained >= max_runs:
            break
        echo(f"[{i}/{len(plan)}] {key}: {format_hyperparameters(hp)}"
             + (f"  max_steps={max_steps} ({fraction:.0%} of an epoch)" if max_steps else ""))
        result = train_one(cfg, rule, out / "runs" / key, keep_checkpoints)
        final = result["final"]
        steps = final["steps"]
        record = {"key": key, **identity, "scale_rule": cfg.scale_rule, "max_steps": max_steps,
                  "auc": final["auc"], "logloss": final["logloss"], **epoch_curve(result["evals"]),
                  "bayes_auc": final.get("bayes_auc"), "bayes_logloss": final.get("bayes_logloss"),
                  "train_rows": meta["splits"]["train"]["rows"],
                  "steps": steps, "steps_per_epoch": result["steps_per_epoch"],
                  "warmup_updates": int(hp["warmup"] * result["steps_per_epoch"]), "regime": regime(steps),
                  "wall_seconds": result["wall"], "train_samples_per_s": final["samples_per_s"],
                  "device": device, "resumed": result["resumed"], "resumed_at_step": result["resumed_at_step"],
                  "clip_audit": result["audit"], "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        append_result(results_path, record)
        done[key] = by_identity[run_identity(record)] = record
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


def _by_seed(group: list) -> dict:
    """(rule, bs) -> {seed: AUC} of one group."""
    cells = {}
    for r in group:
        cells.setdefault((r["rule"], r["bs"]), {})[r["seed"]] = r["auc"]
    return cells


def cell_gap(aucs: dict, baseline: dict, tol: float = 1e-3) -> dict:
    """A cell's gap to the baseline: validate.study.seeds.gap_summary paired by seed (mean, 95 % t interval
    when >= 2 seeds); cells sharing no seed with the baseline get the difference of the means, n 0."""
    from validate.study.seeds import gap_summary

    g = gap_summary(aucs, baseline, tol)
    if g["n"] == 0:
        g = {"n": 0, "mean": statistics.fmean(aucs.values()) - statistics.fmean(baseline.values()),
             "lo": None, "hi": None, "verdict": "unpaired"}
    return g


def format_gap(g: dict) -> str:
    if g.get("lo") is None:
        return f"{g['mean']:+.4f} ({g['n']} paired seed{'s' if g['n'] != 1 else ''}, no interval)"
    return f"{g['mean']:+.4f} [{g['lo']:+.4f}, {g['hi']:+.4f}] ({g['n']} seeds paired, 95 % t interval)"


def largest_batch_gaps(records: list, tol: float = 1e-3) -> list:
    """Per (group, rule): the gap at the group's largest batch to `none` at the base batch.
    -> [(group, rule, largest bs, base bs, gap summary)]."""
    lines = []
    for key, group in sorted(_groups(records).items()):
        cells, base_bs = _by_seed(group), group[0]["base_bs"]
        baseline = cells.get(("none", base_bs))
        largest = max(r["bs"] for r in group)
        if baseline is None or largest == base_bs:
            continue
        for rule in sorted({r["rule"] for r in group}, key=ORDER.get):
            if (rule, largest) in cells:
                lines.append((key, rule, largest, base_bs, cell_gap(cells[(rule, largest)], baseline, tol)))
    return lines


def headline(records: list) -> list:
    """One line per rule: the gap to the base-batch baseline at the largest batch, with its interval."""
    return [f"{model} {optim} init {init:g}: {rule:>15} at {bs_label(bs)}: gap to none at {bs_label(base)} "
            f"{format_gap(g)}" for (model, optim, init), rule, bs, base, g in largest_batch_gaps(records)]


def _regime_note(group: list) -> str:
    r = group[0]
    fraction = result_field(r, "train_fraction")
    if fraction < 1.0:
        return (f"Every run: one pass over {fraction:.0%} of the {r.get('train_rows', 0):,} training rows "
                f"(it stops after that share of an epoch's updates; validate/study/budget.py says why).")
    return f"{r['epochs']} epochs for every run."


def markdown_report(records: list, test_counts: tuple[int, int] | None = None) -> str:
    """The tables of table.md, one block per (model, embedding optimizer, init_stddev)."""
    lines = ["# Scaling study", ""]
    top = headline(records)
    if top:
        lines += ["Gap to `none` at the base batch at the largest batch, per rule (paired by seed):", "", "```",
                  *top, "```", ""]
    for (model, optim, init), group in sorted(_groups(records).items()):
        sizes = sorted({r["bs"] for r in group})
        rules = sorted({r["rule"] for r in group}, key=ORDER.get)
        cell = {(r["rule"], r["bs"]): r for r in group}
        seeds = _by_seed(group)
        base_bs = group[0]["base_bs"]
        baseline = seeds.get(("none", base_bs))
        header = "| rule | " + " | ".join(bs_label(b) for b in sizes) + " |"
        rule_line = "|---|" + "---:|" * len(sizes)
        lines += [f"## {model}, embedding optimizer `{optim}`, init_stddev {init:g}", ""]
        lines += [f"Test AUC, mean over seeds (x n when n > 1), and its gap to `none` at the base batch "
                  f"{bs_label(base_bs)}" + (f" (AUC {statistics.fmean(baseline.values()):.4f})" if baseline
                                             else ", which is missing"), ""]
        lines += [header, rule_line]
        for rule in rules:
            cells = []
            for bs in sizes:
                aucs = seeds.get((rule, bs))
                if aucs is None:
                    cells.append("")
                    continue
                text = f"{statistics.fmean(aucs.values()):.4f}" + (f" x{len(aucs)}" if len(aucs) > 1 else "")
                if baseline is not None:
                    text += f" ({cell_gap(aucs, baseline)['mean']:+.4f})"
                cells.append(text)
            lines.append(f"| {rule} | " + " | ".join(cells) + " |")
        steps = {bs: next(r for r in group if r["bs"] == bs) for bs in sizes}
        lines.append("| *updates per run* | " + " | ".join(f"{steps[b]['steps']:,}" for b in sizes) + " |")
        lines.append("| *step budget* | " + " | ".join(steps[b]["regime"].split(" (")[0] for b in sizes) + " |")
        bayes = group[0].get("bayes_auc")
        notes = []
        if bayes:
            notes.append(f"Bayes-optimal test AUC of the data: {bayes:.4f}.")
        if test_counts and baseline:
            base_auc = statistics.fmean(baseline.values())
            se = auc_standard_error(base_auc, *test_counts)
            notes.append(f"One test-set standard error of an AUC near {base_auc:.3f} on this test split "
                         f"({test_counts[0]:,} positives, {test_counts[1]:,} negatives): {se:.4f} (Hanley-McNeil); "
                         f"runs share the test set, so gaps between them are less noisy than that; the seed "
                         f"spread is another matter (validate.study.seeds).")
        notes.append(f"{_regime_note(group)} Step budget: ample >= 1000 updates, reduced 100-999, starved < 100.")
        lines += ["", *notes, ""]

        if any(len(r.get("auc_by_epoch", [])) > 1 for r in group):
            lines += ["Best evaluation by test AUC: epoch (AUC, logloss there); every epoch's values are in "
                      "results.jsonl", "", header, rule_line]
            for rule in rules:
                lines.append(f"| {rule} | " + " | ".join(
                    f"{cell[(rule, b)]['best_epoch']} ({cell[(rule, b)]['best_auc']:.4f}, "
                    f"{cell[(rule, b)]['best_logloss']:.4f})"
                    if cell.get((rule, b), {}).get("best_epoch") else "" for b in sizes) + " |")
            lines.append("")

        lines += ["Wall time per run, seconds (training and per-epoch evaluation)", "", header, rule_line]
        for rule in rules:
            lines.append(f"| {rule} | " + " | ".join(
                f"{cell[(rule, b)]['wall_seconds']:.0f}" if (rule, b) in cell else "" for b in sizes) + " |")
        lines.append("")

        audited = [r for r in group if r.get("clip_audit")]
        if audited:
            buckets = []
            for r in audited:
                for label in r["clip_audit"].get("all", {}):
                    if label not in buckets:
                        buckets.append(label)
            buckets.sort(key=lambda s: int(s.split("-")[0]))
            lines += ["Clip audit: fraction of (update, id) pairs whose gradient the clip scaled down, by the id's "
                      "count cnt_k in the batch (all epochs; the first is CowClip's warm-up); `off`: r = 0, no "
                      "gradient is scaled", "",
                      "| rule | batch | seed | all ids | " + " | ".join(f"cnt {b}" for b in buckets) + " |",
                      "|---|---:|---:|---:|" + "---:|" * len(buckets)]
            for r in sorted(audited, key=lambda r: (ORDER[r["rule"]], r["bs"], r["seed"])):
                audit = r["clip_audit"]
                off = " (off)" if audit.get("clip") == "off" else ""
                lines.append(f"| {r['rule']} | {bs_label(r['bs'])} | {r['seed']} | "
                             f"{audit['clipped_fraction']:.3f}{off} | "
                             + " | ".join(f"{audit['all'][b]['clipped_fraction']:.3f}" if b in audit.get("all", {})
                                          else "" for b in buckets) + " |")
            lines.append("")
    return "\n".join(lines)


# distinct for every rule: color, marker and line style all change from one rule to the next
MARKERS = "osD^vP*Xh<>p"
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2)), (0, (3, 1, 3, 4)))


def rule_style(rule: str, colors) -> dict:
    i = ORDER[rule]
    return dict(color=colors(i % 10), marker=MARKERS[i % len(MARKERS)], linestyle=LINESTYLES[i % len(LINESTYLES)],
                label=rule)


def _dodge(bs: list, rule: str, rules: list) -> list:
    """Batch sizes moved a little sideways per rule, so that overlapping points and bars stay visible."""
    shift = 2.0 ** (0.04 * (rules.index(rule) - (len(rules) - 1) / 2))
    return [b * shift for b in bs]


def plot_title(group: list) -> str:
    r = group[0]
    seeds = sorted({x["seed"] for x in group})
    rows = r.get("train_rows")
    fraction = result_field(r, "train_fraction")
    what = (f"one pass over {fraction:.0%} of {rows:,} training rows" if fraction < 1.0
            else f"{r['epochs']} epoch{'s' if r['epochs'] != 1 else ''} of {rows:,} training rows" if rows
            else f"{r['epochs']} epochs")
    return f"{r['model']}, {r['embed_optim']} embedding Adam, init {r['init_stddev']:g}: {what}; seeds {seeds}"


def plot_report(records: list, path: Path) -> bool:
    """scaling.png: per (model, optimizer, init) a row of two panels, the AUC gap to `none` at the base
    batch (mean over seeds paired with the baseline, bars: 95 % t interval with >= 2 seeds) and wall
    time, against batch size. -> False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    groups = sorted(_groups(records).items())
    fig, axes = plt.subplots(len(groups), 2, figsize=(13, 4.8 * len(groups)), squeeze=False)
    colors = plt.get_cmap("tab10")
    for row, ((model, optim, init), group) in enumerate(groups):
        gap_ax, time_ax = axes[row]
        seeds = _by_seed(group)
        base_bs = group[0]["base_bs"]
        baseline = seeds.get(("none", base_bs))
        sizes = sorted({r["bs"] for r in group})
        rules = sorted({r["rule"] for r in group}, key=ORDER.get)
        for rule in rules:
            style = rule_style(rule, colors)
            walls = {}
            for r in group:
                if r["rule"] == rule:
                    walls.setdefault(r["bs"], []).append(r["wall_seconds"])
            time_ax.plot(sorted(walls), [statistics.fmean(walls[b]) for b in sorted(walls)], **style)
            if baseline is None:
                continue
            gaps = [(bs, cell_gap(seeds[(rule, bs)], baseline)) for bs in sizes if (rule, bs) in seeds]
            bs, mean = _dodge([b for b, _ in gaps], rule, rules), [g["mean"] for _, g in gaps]
            low = [g["mean"] - g["lo"] if g.get("lo") is not None else 0.0 for _, g in gaps]
            high = [g["hi"] - g["mean"] if g.get("hi") is not None else 0.0 for _, g in gaps]
            gap_ax.errorbar(bs, mean, yerr=[low, high], capsize=3, **style)
        gap_ax.axhline(0.0, color="black", linewidth=0.8)
        for ax, ylabel in ((gap_ax, f"test AUC - AUC of none at {bs_label(base_bs)}"),
                           (time_ax, "wall time per run (s)")):
            ax.set_xscale("log", base=2)
            ax.set_xticks(sizes, [bs_label(b) for b in sizes])
            ax.set_xlabel("batch size")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        time_ax.set_yscale("log")
        gap_ax.set_title(plot_title(group), fontsize=9)
        time_ax.set_title("training and evaluation time per run (mean over seeds)", fontsize=9)
        gap_ax.legend(fontsize=8)
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
    for line in headline(records):
        echo(line)
    echo(f"wrote {out / 'table.md'}")
    if plot_report(records, out / "scaling.png"):
        echo(f"wrote {out / 'scaling.png'}")
    else:
        echo("matplotlib is not installed (pip install matplotlib): no plot")


# --------------------------------------------------------------------------------------------
# the command line


def trained_runs(grid: dict, dataset: str, seed: int) -> list:
    """[(bs, embed_optim)] of the runs the grid trains: runs without a clip and with the same numbers
    (none, sqrt and linear at the base batch) are one run, which run_grid trains once."""
    from engine.scaling import DATASET_BASES

    base = dict(DATASET_BASES[dataset], bs=grid["base_bs"])
    distinct = {}
    for init, optim, rule, bs, run_seed in grid_plan(grid, seed):
        what = rule if rule in CLIP_RULES else json.dumps(hyperparameters(rule, bs, base), sort_keys=True)
        distinct[(init, optim, bs, run_seed, what)] = (bs, optim)
    return list(distinct.values())


def fit_budget(grid: dict, dataset: str, seed: int, meta: dict, budget_s: float | None, echo) -> None:
    """Set grid["epochs"] and grid["train_fraction"] from the device-time budget (validate/study/budget.py),
    unless --epochs was given; print the arithmetic either way."""
    from validate.study.budget import describe, grid_seconds, plan_budget

    train_rows = meta["splits"]["train"]["rows"]
    vocab_rows = sum(f["vocab_size"] for f in meta["sparse_features"])
    runs = trained_runs(grid, dataset, seed)
    budget = budget_s if budget_s is not None else grid.get("budget_s", 480.0)
    if grid.get("epochs") is not None:
        seconds = grid_seconds(runs, train_rows, vocab_rows, grid["epochs"], grid["epochs"])
        echo(f"{len(runs)} runs x {grid['epochs']} epochs (given): about {seconds:,.0f} s at H200 step times "
             f"(validate/study/budget.py)")
        grid["train_fraction"] = 1.0
        return
    try:
        plan = plan_budget(runs, train_rows, vocab_rows, budget)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--budget-s")
    echo(describe(plan, train_rows))
    grid["epochs"], grid["train_fraction"] = plan.epochs, plan.fraction


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
@click.option("--rules", default=None, help=f"comma-separated subset of {','.join(ALL_RULES)} (with "
                                            f"--embed-optim/--init-stddev: one sub-grid, one seed, in place of "
                                            f"the preset's)")
@click.option("--embed-optim", default=None, help="comma-separated subset of dense,lazy")
@click.option("--init-stddev", default=None, help="comma-separated embedding init stddevs, e.g. 1e-2,1e-4")
@click.option("--epochs", default=None, type=int, help="epochs of every run (default: the preset's; for "
                                                          "--preset gpu, what --budget-s allows)")
@click.option("--budget-s", default=None, type=float, help="--preset gpu: H200 seconds the grid may take "
                                                           "(default 480; validate/study/budget.py)")
@click.option("--seed", default=1235, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--max-runs", default=0, type=int, help="stop after training this many new runs (0: all)")
@click.option("--keep-checkpoints", is_flag=True, help="keep each finished run's checkpoint")
@click.option("--report-only", is_flag=True, help="only rebuild table.md and scaling.png from results.jsonl")
def main(preset, out, model, data, dataset, rows, max_vocab, cache, batch_sizes, base_bs, rules, embed_optim,
         init_stddev, epochs, budget_s, seed, device, max_runs, keep_checkpoints, report_only):
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
    if max_vocab is not None:   # an explicit largest vocabulary asks for the log-spaced shape
        grid["vocab"] = "geomspace"
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
        shape = ("Criteo Kaggle's 26 vocabularies" if grid.get("vocab") == "criteo"
                 else f"largest vocabulary {grid['max_vocab']:,}")
        click.echo(f"data: synthetic, {grid['rows']:,} rows, {shape} (generated once into the cache)")
        started = time.perf_counter()
        data = synthetic_data(cache, grid["rows"], grid["max_vocab"], grid["test_fraction"],
                              grid.get("vocab", "geomspace"))
        click.echo(f"data ready in {time.perf_counter() - started:.0f} s")
        dataset = dataset or "synthetic"
    dataset = (dataset or "criteo_kaggle").lower()
    meta = load_meta(data)
    train_rows = meta["splits"]["train"]["rows"]
    usable = tuple(b for b in grid["batch_sizes"] if b <= train_rows)
    if usable != tuple(grid["batch_sizes"]):
        click.echo(f"skipping batch sizes above the {train_rows:,} training rows: "
                   f"{sorted(set(grid['batch_sizes']) - set(usable))}")
    grid["batch_sizes"] = usable
    if "budget_s" in grid or budget_s is not None:
        fit_budget(grid, dataset, seed, meta, budget_s, click.echo)
    regime_text = (f"{grid['epochs']} epochs" if grid.get("train_fraction", 1.0) >= 1.0
                   else f"one pass over {grid['train_fraction']:.0%} of an epoch")
    click.echo(f"data {data}: {train_rows:,} training rows; batches {','.join(map(str, usable))} from base "
               f"{grid['base_bs']}; {regime_text}")
    for g in grid["grids"]:
        click.echo(f"  rules {','.join(g['rules'])} with {','.join(g['embed_optims'])} embedding Adam, "
                   f"init_stddev {','.join(f'{x:g}' for x in g['init_stddevs'])}")
    started = time.perf_counter()
    trained = run_grid(grid, out, model, data, dataset, device, seed, keep_checkpoints, max_runs, click.echo)
    click.echo(f"trained {trained} new runs in {time.perf_counter() - started:.0f} s; "
               f"results in {out / 'results.jsonl'}")
    write_report(out, click.echo)


if __name__ == "__main__":
    from engine.run.runtime import configure_process

    configure_process()   # keep freed memory, quiet Numba threads (engine/run/runtime.py)
    sys.exit(main())
