"""validate.study.scaling end to end on the `tiny` preset, and the ablation clips against plain NumPy."""
import json
from dataclasses import replace

import click
import numpy as np
import pytest
from click.testing import CliRunner

from engine.backend import get_backend
from engine.cowclip import COWCLIP, RULES, ClipRule, clip_rows
from engine.kernels.cowclip import cowclip_rows_reference
from engine.layers.embedding import RowGrad
from validate.study.ablations import CLIP_RULES, ClipTally, clip_rule
from validate.study.scaling import ALL_RULES, GPU_RULES, main
from validate.study.seeds import load_seeded, seeds_report


# --------------------------------------------------------------------------------------------
# the clip rules, in float64 against loops written out


def _row_grad(rng, num_rows=40, dim=5, unique=17):
    table = rng.normal(0.0, 0.05, (num_rows, dim))
    ids = np.sort(rng.choice(num_rows, unique, replace=False)).astype(np.int64)
    counts = rng.integers(1, 9, unique).astype(np.int64)
    rows = rng.normal(0.0, 0.2, (unique, dim))
    rows[3] = 0.0  # a zero gradient keeps scale 1
    return table, RowGrad(ids, rows, counts)


@pytest.mark.parametrize("trial", range(5))
def test_nocnt_is_cowclip_with_unit_counts(trial):
    rng = np.random.default_rng(trial)
    table, grad = _row_grad(rng)
    expected, expected_scales = cowclip_rows_reference(grad.rows, table, grad.ids, np.ones_like(grad.counts), 1.0, 0.01)
    scales = clip_rows(RULES["cowclip_nocnt"], grad, table, [0], get_backend("cpu"), 1.0, 0.01)
    np.testing.assert_allclose(grad.rows, expected, rtol=1e-12, atol=0)
    np.testing.assert_allclose(scales, expected_scales, rtol=1e-12)


@pytest.mark.parametrize("trial", range(5))
def test_field_and_global_clip_scale_each_group_by_its_norms(trial):
    rng = np.random.default_rng(trial)
    table, grad = _row_grad(rng)
    offsets = np.array([0, 10, 25])
    original = grad.rows.copy()
    ratio, floor = 0.5, 1e-3
    field_scales = clip_rows(RULES["cowclip_field"], grad, table, offsets, get_backend("cpu"), ratio, floor)
    field = np.searchsorted(offsets, grad.ids, side="right") - 1
    for f in range(len(offsets)):
        inside = field == f
        if not inside.any():
            continue
        g_norm = np.linalg.norm(original[inside])
        threshold = max(ratio * np.linalg.norm(table[grad.ids[inside]]), floor)
        expected = min(1.0, threshold / g_norm)
        np.testing.assert_allclose(field_scales[inside], expected, rtol=1e-12)
        np.testing.assert_allclose(grad.rows[inside], original[inside] * expected, rtol=1e-12)

    table, grad = _row_grad(rng)
    original = grad.rows.copy()
    global_scales = clip_rows(RULES["cowclip_global"], grad, table, offsets, get_backend("cpu"), ratio, floor)
    expected = min(1.0, max(ratio * np.linalg.norm(table[grad.ids]), floor) / np.linalg.norm(original))
    np.testing.assert_allclose(global_scales, expected, rtol=1e-12)
    np.testing.assert_allclose(grad.rows, original * expected, rtol=1e-12)


def test_clip_rule_is_a_value_that_tallies():
    tally = ClipTally(steps_per_epoch=2)
    rule = clip_rule("cowclip_const", tally)
    assert rule == ClipRule(weight_term=False) and rule != COWCLIP      # the tally is not part of the rule
    assert rule.constants("reference", 1.0, 1e-5, 10) == (0.0, COWCLIP.constants("reference", 1.0, 1e-5, 10)[1])
    rng = np.random.default_rng(0)
    table, grad = _row_grad(rng)
    clip_rows(rule, grad, table, [0], get_backend("cpu"), 0.0, 1e-3)
    summary = tally.summary()
    assert sum(b["ids"] for b in summary["all"].values()) == 17
    assert set(CLIP_RULES) <= set(ALL_RULES) and set(CLIP_RULES) == set(RULES)
    with pytest.raises(ValueError):
        ClipRule(unit="field")                                         # a group clip has no count factor


def test_constant_rule_clips_absent_rows_at_zeta_in_dense_mode():
    # through apply_gradients: the constant rule's ratio 0 still clips the L2-only rows
    from engine.optim import AdamState
    from engine.step import StepConfig, apply_gradients
    from models import ModelConfig, Schema, build_model

    model = build_model("fm", Schema((3,), 0), ModelConfig(embed_dim=2, dtype="float64"))
    params = model.init_params(0)
    params["embed.table"][:] = [[3.0, 4.0], [3.0, 4.0], [1.0, 0.0]]
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    grads["linear.table"] = RowGrad(np.array([2]), np.zeros((1, 1)), np.array([1]))
    grads["embed.table"] = RowGrad(np.array([2]), np.zeros((1, 2)), np.array([1]))
    config = StepConfig(l2=1.0, clip=1.0, bound=0.01, clip_form="reference", embed_optim="dense")
    runs = {}
    for rule in ("cowclip", "cowclip_const"):
        p = {k: v.copy() for k, v in params.items()}
        state = AdamState.zeros_like(p, np)
        apply_gradients(model, p, grads, state, replace(config, rule=RULES[rule]), get_backend("cpu"))
        runs[rule] = state.m["embed.table"][0] / 0.1    # the gradient row 0 was updated with
    # absent row 0: g = 2 * l2 * w = (6, 8), norm 10. CowClip: threshold max(1 * ||w||, floor) = 5
    np.testing.assert_allclose(runs["cowclip"], [3.0, 4.0], rtol=1e-12)
    # constant rule: threshold is the floor alone, r * r * sqrt(2) * 0.01
    floor = np.sqrt(2) * 0.01
    np.testing.assert_allclose(runs["cowclip_const"], np.array([6.0, 8.0]) * floor / 10, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# the grid


def test_tiny_preset_end_to_end_and_resumes(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["--preset", "tiny", "--out", str(out), "--cache", str(cache), "--device", "cpu"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    lines = (out / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert {r["rule"] for r in records} == set(ALL_RULES)
    for r in records:
        assert 0.0 <= r["auc"] <= 1.0 and r["steps"] > 0 and r["wall_seconds"] > 0
        # every run has a clip audit; runs with r = 0 say the clip was off
        assert 0.0 <= r["clip_audit"]["clipped_fraction"] <= 1.0
        assert (r["clip_audit"].get("clip") == "off") == (r["rule"] not in CLIP_RULES)
    table = (out / "table.md").read_text()
    for rule in ALL_RULES:
        assert f"| {rule} |" in table
    try:
        import matplotlib  # noqa: F401  (optional dependency)
        assert (out / "scaling.png").stat().st_size > 0
    except ImportError:
        pass

    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0, second.output
    assert "trained 0 new runs" in second.output
    assert (out / "results.jsonl").read_text().splitlines() == lines

    # validate.study.seeds reads what the grid wrote (one seed: gaps, but no interval yet)
    pooled = seeds_report(load_seeded([out]), tol=1e-3)
    assert f"Seeds: {records[0]['seed']}." in pooled
    assert "| cowclip | 1K | 1 |" in pooled and "undecided (1 seed)" in pooled


def test_a_run_cut_off_mid_way_resumes_from_its_checkpoint(tmp_path):
    from dataio.synthetic import ensure_default
    from engine.scaling import CRITEO_BASE
    from engine.run.config import RunConfig
    from validate.study.scaling import hyperparameters, train_one

    data = str(ensure_default(tmp_path / "cache", rows=3_000, max_vocab=300, test_fraction=0.2))
    hp = hyperparameters("cowclip_field", 512, dict(CRITEO_BASE, bs=256))
    cfg = RunConfig(model="deepfm", bs=512, epochs=2, data=data, dataset="synthetic", device="cpu", seed=3, hp=hp,
                    scale_rule="cowclip", base_bs=256, embed_optim="lazy", clip_form="reference", embed_dim=4,
                    dropout=0.0, init_stddev=1e-2, accum=1, eval_every=0, log_every=10 ** 9, checkpoint_every=0,
                    audit=False, split="rand", max_steps=3)
    cut = train_one(cfg, "cowclip_field", tmp_path / "run", keep_checkpoint=True)  # stands in for a kill
    assert cut["final"]["steps"] == 3 and not cut["resumed"]
    cfg.max_steps = 0
    done = train_one(cfg, "cowclip_field", tmp_path / "run", keep_checkpoint=False)
    assert done["resumed"] and done["resumed_at_step"] == 3
    assert done["final"]["steps"] == 2 * done["steps_per_epoch"]
    assert sum(b["ids"] for b in done["audit"]["by_epoch"]["2"].values()) > 0
    assert not (tmp_path / "run" / "checkpoint").exists()


# --------------------------------------------------------------------------------------------
# the gpu preset, in a tiny form


def _lines(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_gpu_preset_tiny_form(tmp_path):
    out = tmp_path / "out"
    args = ["--preset", "gpu", "--rows", "700", "--max-vocab", "200", "--epochs", "1", "--batch-sizes", "128,256",
            "--base-bs", "128", "--seed", "5", "--out", str(out), "--cache", str(tmp_path / "cache"),
            "--device", "cpu"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    records = _lines(out)
    assert {r["rule"] for r in records} == set(GPU_RULES)
    seeds = {}
    for r in records:
        seeds.setdefault((r["rule"], r["bs"]), set()).add(r["seed"])
    # a second seed for every cell at the largest batch and for the baseline it is paired with
    assert all(seeds[(rule, 256)] == {5, 6} for rule in GPU_RULES)
    assert seeds[("none", 128)] == {5, 6} and seeds[("cowclip", 128)] == {5}
    by = {(r["rule"], r["bs"], r["seed"]): r for r in records}
    noclip, cowclip = by[("cowclip_noclip", 256, 5)]["hp"], by[("cowclip", 256, 5)]["hp"]
    assert noclip["clip"] == 0.0 and cowclip["clip"] > 0 and dict(noclip, clip=cowclip["clip"]) == cowclip
    for r in records:
        assert r["steps"] == r["steps_per_epoch"] and r["train_fraction"] == 1.0
        assert len(r["auc_by_epoch"]) == len(r["logloss_by_epoch"]) == 1 and r["best_epoch"] == 1
        assert r["auc"] == r["auc_by_epoch"][-1] and r["bayes_auc"] > 0.5
        assert (r["clip_audit"].get("clip") == "off") == (r["hp"]["clip"] == 0.0)
        if r["hp"]["clip"] > 0:
            assert sum(b["ids"] for b in r["clip_audit"]["all"].values()) > 0
    # one printed line per rule: the gap at the largest batch with its interval (2 seeds, paired)
    for rule in GPU_RULES:
        line = next(x for x in result.output.splitlines() if f" {rule} at 256: gap to none at 128" in x)
        gaps = [by[(rule, 256, s)]["auc"] - by[("none", 128, s)]["auc"] for s in (5, 6)]
        assert f"{sum(gaps) / 2:+.4f} [" in line and "2 seeds paired" in line
    table = (out / "table.md").read_text()
    assert "| cowclip_noclip |" in table and " x2 (" in table
    try:
        import matplotlib  # noqa: F401  (optional dependency)
        assert (out / "scaling.png").stat().st_size > 0
    except ImportError:
        pass


def test_gpu_preset_without_epochs_fits_the_budget_with_a_fraction_of_an_epoch(tmp_path):
    from dataio.meta import load_meta
    from dataio.synthetic import ensure_default
    from validate.study.budget import grid_seconds

    cache = tmp_path / "cache"
    meta = load_meta(ensure_default(cache, rows=1000, max_vocab=200, test_fraction=0.1))
    train_rows = meta["splits"]["train"]["rows"]
    vocab = sum(f["vocab_size"] for f in meta["sparse_features"])
    fixed, full = (grid_seconds([(128, "dense")], train_rows, vocab, e, 1) for e in (0, 1))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "--preset", "gpu", "--rows", "1000", "--max-vocab", "200", "--rules", "none", "--batch-sizes", "128",
        "--base-bs", "128", "--budget-s", str(fixed + 0.5 * (full - fixed)), "--out", str(out),
        "--cache", str(cache), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "one full epoch of the grid does not fit" in result.output
    [record] = _lines(out)
    assert 0.0 < record["train_fraction"] < 1.0
    assert record["steps"] == record["max_steps"] == max(1, int(record["train_fraction"] * record["steps_per_epoch"]))
    assert record["steps"] < record["steps_per_epoch"]
    assert "one pass over" in (out / "table.md").read_text()


# --------------------------------------------------------------------------------------------
# the study's own results


def test_a_torn_last_line_is_moved_aside_before_appending(tmp_path):
    out = tmp_path / "out"
    args = ["--preset", "tiny", "--rules", "none", "--batch-sizes", "256", "--out", str(out),
            "--cache", str(tmp_path / "cache"), "--device", "cpu"]
    assert CliRunner().invoke(main, args).exit_code == 0
    path = out / "results.jsonl"
    torn = path.read_bytes()[:-40]          # a kill in the middle of writing the line
    path.write_bytes(torn)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "torn" in result.output and "trained 1 new runs" in result.output
    records = _lines(out)                    # every line parses: nothing was appended onto the fragment
    assert [r["bs"] for r in records] == [256]
    assert (out / "results.jsonl.torn").read_bytes() == torn + b"\n"
    assert "| none | 0." in (out / "table.md").read_text()


def test_a_complete_last_line_without_newline_is_kept(tmp_path):
    from validate.study.scaling import repair_results

    path = tmp_path / "results.jsonl"
    path.write_text('{"key": "a"}\n{"key": "b"}')
    assert repair_results(path) is None
    assert path.read_text() == '{"key": "a"}\n{"key": "b"}\n'
    assert not (tmp_path / "results.jsonl.torn").exists()


def test_another_seed_is_kept_apart_and_another_grid_is_refused(tmp_path):
    out = tmp_path / "out"
    args = ["--preset", "tiny", "--rules", "none", "--batch-sizes", "256", "--out", str(out),
            "--cache", str(tmp_path / "cache"), "--device", "cpu"]
    assert CliRunner().invoke(main, args + ["--seed", "1"]).exit_code == 0
    second = CliRunner().invoke(main, args + ["--seed", "2"])
    assert second.exit_code == 0, second.output
    assert "trained 1 new runs" in second.output
    records = _lines(out)
    assert sorted(r["seed"] for r in records) == [1, 2] and len({r["key"] for r in records}) == 2
    assert "0." in (out / "table.md").read_text() and " x2 " in (out / "table.md").read_text()
    before = (out / "results.jsonl").read_bytes()
    for change, field in ((["--base-bs", "128"], "base_bs"), (["--epochs", "2"], "epochs")):
        refused = CliRunner().invoke(main, args + ["--seed", "1"] + change)
        assert refused.exit_code != 0 and "holds another grid" in refused.output and field in refused.output
    assert (out / "results.jsonl").read_bytes() == before
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(r["key"] for r in records)


def test_result_lines_written_before_the_new_fields_keep_their_identity():
    from validate.study.scaling import check_same_grid, run_identity

    legacy = {"key": "deepfm-none-bs256-dense-init0.01", "model": "deepfm", "rule": "none", "bs": 256, "base_bs": 256,
              "embed_optim": "dense", "init_stddev": 0.01, "epochs": 2, "data": "/d", "dataset": "synthetic",
              "seed": 1235, "hp": {"lr": 8e-4}, "clip_form": "reference"}
    now = dict(legacy, data_id="abc", train_fraction=1.0, embed_dim=10, dropout=0.0)
    assert run_identity(legacy) == run_identity(now)
    assert run_identity(dict(now, seed=2)) != run_identity(now)
    assert run_identity(dict(now, train_fraction=0.5)) != run_identity(now)
    check_same_grid({"a": legacy}, now, "results.jsonl")        # no fingerprint recorded: not a conflict
    with pytest.raises(click.ClickException, match="data_id"):
        check_same_grid({"a": dict(legacy, data_id="xyz")}, now, "results.jsonl")
