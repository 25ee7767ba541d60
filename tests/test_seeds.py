"""validate.study.seeds: pooling a scaling grid over seeds, on result lines written here by hand."""
import json
import math
import statistics

import click
import pytest
from click.testing import CliRunner

from validate.study.seeds import gap_summary, load_seeded, main, seeds_report, t95

GRID = dict(model="deepfm", data="/data/x", epochs=2, base_bs=256, clip_form="reference", dataset="synthetic",
            embed_optim="lazy", init_stddev=0.01)


def _write_grid(path, seed, aucs, **changes):
    """aucs: {(rule, bs): auc} -> one results.jsonl like validate.study.scaling writes."""
    path.mkdir(parents=True)
    lines = []
    for (rule, bs), auc in aucs.items():
        record = dict(GRID, key=f"deepfm-{rule}-bs{bs}", rule=rule, bs=bs, seed=seed, auc=auc, **changes)
        if rule in ("sqrt", "linear") and bs == GRID["base_bs"]:
            record["copied_from"] = "deepfm-none-bs256"
        lines.append(json.dumps(record))
    (path / "results.jsonl").write_text("\n".join(lines) + "\n")
    return path


def _three_seeds(tmp_path, gaps_at_1k):
    dirs = []
    for seed, (baseline, gap) in enumerate(zip((0.770, 0.775, 0.768), gaps_at_1k), start=1):
        dirs.append(_write_grid(tmp_path / f"s{seed}", seed, {
            ("none", 256): baseline, ("sqrt", 256): baseline, ("cowclip", 1024): baseline + gap}))
    return dirs


def test_t_quantiles_come_from_the_table_and_stay_conservative_between_entries():
    assert t95(2) == 4.303
    assert t95(11) == t95(10) == 2.228  # exact 2.201: the wider interval is the safe side
    assert abs(t95(120) - 1.980) < 3e-3
    with pytest.raises(ValueError):
        t95(0)


@pytest.mark.parametrize("gaps, verdict", [
    ((-0.0002, -0.0003, -0.0001), "within"),
    ((-0.010, -0.011, -0.012), "not within"),
    ((+0.002, -0.004, -0.001), "undecided"),
])
def test_paired_gap_interval_and_verdict(gaps, verdict):
    baseline = {1: 0.770, 2: 0.775, 3: 0.768}
    aucs = {s: baseline[s] + g for s, g in zip((1, 2, 3), gaps)}
    g = gap_summary(aucs, baseline, tol=1e-3)
    mean, sd = statistics.fmean(gaps), statistics.stdev(gaps)
    half = 4.303 * sd / math.sqrt(3)
    assert g["n"] == 3
    assert g["mean"] == pytest.approx(mean, abs=1e-12)
    assert g["sd"] == pytest.approx(sd, abs=1e-12)
    assert (g["lo"], g["hi"]) == pytest.approx((mean - half, mean + half), abs=1e-12)
    assert g["verdict"] == verdict


def test_gaps_pair_only_the_seeds_both_cells_have():
    g = gap_summary({1: 0.76, 2: 0.75, 3: 0.74}, {1: 0.77, 3: 0.78}, tol=1e-3)
    assert g["n"] == 2
    assert g["mean"] == pytest.approx(((0.76 - 0.77) + (0.74 - 0.78)) / 2)
    one = gap_summary({1: 0.76}, {1: 0.77}, tol=1e-3)
    assert one["n"] == 1 and one["verdict"].startswith("undecided")


def test_report_pools_the_directories(tmp_path):
    dirs = _three_seeds(tmp_path, (-0.010, -0.011, -0.012))
    out = tmp_path / "seeds.md"
    result = CliRunner().invoke(main, [*map(str, dirs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = out.read_text()
    assert "Seeds: 1, 2, 3." in report
    mean = statistics.fmean((0.770, 0.775, 0.768))
    assert f"| none | {mean:.4f} +- {statistics.stdev((0.770, 0.775, 0.768)):.4f} (3) |" in report
    assert "| cowclip | 1K | 3 | -0.0110 | 0.0010 |" in report and "not within" in report
    # sqrt at the base batch is the baseline run itself: an AUC cell, but no gap row
    assert "| sqrt | 256 |" not in report


def test_refuses_a_seed_counted_twice_and_grids_that_differ(tmp_path):
    a = _write_grid(tmp_path / "a", 7, {("none", 256): 0.77})
    b = _write_grid(tmp_path / "b", 7, {("none", 256): 0.78})
    with pytest.raises(click.ClickException, match="both hold seed 7"):
        load_seeded([a, b])
    c = _write_grid(tmp_path / "c", 8, {("none", 256): 0.78}, epochs=4)
    with pytest.raises(click.ClickException, match="epochs 2 vs 4"):
        load_seeded([a, c])
    with pytest.raises(click.ClickException, match="no such file"):
        load_seeded([tmp_path / "missing"])


def test_one_directory_may_hold_several_seeds_but_each_seed_counts_once(tmp_path):
    both = tmp_path / "both"
    both.mkdir()
    lines = []
    for seed, baseline, gap in ((1, 0.770, -0.010), (2, 0.775, -0.012)):
        for rule, bs, auc in (("none", 256, baseline), ("cowclip", 1024, baseline + gap)):
            lines.append(json.dumps(dict(GRID, key=f"deepfm-{rule}-bs{bs}-seed{seed}", rule=rule, bs=bs, seed=seed,
                                         auc=auc)))
    (both / "results.jsonl").write_text("\n".join(lines) + "\n")
    report = seeds_report(load_seeded([both]), tol=1e-3)
    assert "Seeds: 1, 2." in report and "| cowclip | 1K | 2 | -0.0110 |" in report
    other = _write_grid(tmp_path / "other", 2, {("none", 256): 0.78})
    with pytest.raises(click.ClickException, match="both hold seed 2"):
        load_seeded([both, other])
