"""validate.scaling end to end on the `tiny` preset, and the ablation clips against plain NumPy."""
import json
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from engine.backend import get_backend
from engine.cowclip import COWCLIP, RULES, ClipRule, clip_rows
from engine.kernels.cowclip import cowclip_rows_reference
from engine.layers.embedding import RowGrad
from validate.ablations import CLIP_RULES, ClipTally, clip_rule
from validate.scaling import ALL_RULES, main
from validate.seeds import load_seeded, seeds_report


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
        assert (r["clip_audit"] is not None) == (r["rule"] in CLIP_RULES)
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

    # validate.seeds reads what the grid wrote (one seed: gaps, but no interval yet)
    pooled = seeds_report(load_seeded([out]), tol=1e-3)
    assert f"Seeds: {records[0]['seed']}." in pooled
    assert "| cowclip | 1K | 1 |" in pooled and "undecided (1 seed)" in pooled


def test_a_run_cut_off_mid_way_resumes_from_its_checkpoint(tmp_path):
    from dataio.synthetic import ensure_default
    from engine.scaling import CRITEO_BASE
    from engine.train import RunConfig
    from validate.scaling import hyperparameters, train_one

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
