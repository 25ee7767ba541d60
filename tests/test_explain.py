"""validate.audit.explain: every number it prints is recomputed here from Algorithm 1's formulas in float64,
from the printed inputs (batch ids, w, the backward pass's g), without engine/cowclip.py."""
import math
import re

import numpy as np
import pytest
from click.testing import CliRunner

from validate.audit import explain

# float32 training arithmetic printed with 9 digits, recomputed in float64
RTOL, ATOL = 2e-6, 1e-9


def _value(text: str):
    text = text.split("#")[0].strip()
    if text.startswith("["):
        return np.array([float(x) for x in text.strip("[]").split(",")])
    return float(text)


def parse(output: str) -> tuple[dict, dict]:
    """-> (header values, {form: {"constants": {...}, "rows": {row: {label: value, "kind": ...}}}}); the
    section on the reference's sparse branch is the form "sparse". The side-by-side section (from its
    '== the clip side by side' header on) is left to parse_side."""
    header, forms, form, row = {}, {}, None, None
    for line in output.splitlines():
        if line.startswith("== the clip side by side"):
            break
        if m := re.match(r"== form (\w+) ==", line):
            form, row = m.group(1), None
            forms[form] = {"constants": {}, "rows": {}}
        elif line.startswith("== l2 = 0: the reference's untested sparse branch"):
            form, row = "sparse", None
            forms[form] = {"constants": {}, "rows": {}}
        elif m := re.match(r"-- row (\d+) \(field \w+, id \d+\): (.+)", line):
            row = int(m.group(1))
            forms[form]["rows"][row] = {"kind": m.group(2)}
        elif m := re.match(r"ids (\d+) = (\[.*\])  label (\d)", line):
            header.setdefault("ids", []).append([int(x) for x in m.group(2).strip("[]").split(",")])
        elif m := re.match(r"([\w|]+) = (.+)", line):
            target = header if form is None else (forms[form]["constants"] if row is None
                                                  else forms[form]["rows"][row])
            target[m.group(1)] = _value(m.group(2))
    return header, forms


def parse_side(output: str) -> dict:
    """The side-by-side section -> {t: {"constants": {...}, "rows": {row: {label: value, "kind": ...}}}}."""
    side, t, row = {}, None, None
    lines = output.splitlines()
    for line in lines[next(i for i, x in enumerate(lines) if x.startswith("== the clip side by side")):]:
        if m := re.match(r"--- update t = (\d+)", line):
            t, row = int(m.group(1)), None
            side[t] = {"constants": {}, "rows": {}}
        elif m := re.match(r"-- row (\d+) \(field \w+, id \d+\): (.+)", line):
            row = int(m.group(1))
            side[t]["rows"][row] = {"kind": m.group(2)}
        elif t is not None and (m := re.match(r"(\w+) = (.+)", line)):
            (side[t]["constants"] if row is None else side[t]["rows"][row])[m.group(1)] = _value(m.group(2))
    return side


@pytest.fixture(scope="module")
def output():
    result = CliRunner().invoke(explain.main, [], catch_exceptions=False)
    assert result.exit_code == 0
    return result.output


@pytest.fixture(scope="module")
def printed(output):
    return parse(output)


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


def test_the_batch_shows_every_case(printed):
    header, forms = printed
    for form in ("reference", "paper"):
        kinds = [r["kind"] for r in forms[form]["rows"].values()]
        assert {"clipped", "not clipped", "zero row", "absent from the batch"} <= set(kinds), kinds
    counts = np.bincount(np.ravel(header["ids"]), minlength=8)
    assert counts.max() > 1                                    # ids repeat


@pytest.mark.parametrize("form", ["reference", "paper"])
def test_every_printed_number_follows_algorithm_1(printed, form):
    header, forms = printed
    const, rows = forms[form]["constants"], forms[form]["rows"]
    lam, r, bound, K = header["lambda"], header["r"], header["bound"], int(header["K"])
    b1, b2, eps = header["beta1"], header["beta2"], header["epsilon"]
    # (ratio, floor) from the paper's (r, zeta) or the reference's clip.py (min_w = r sqrt(K) bound)
    assert const["ratio"] == r
    close(const["floor"], bound if form == "paper" else r * (r * math.sqrt(K) * bound))
    lr_t = header["lr_embed"] * math.sqrt(1 - b2) / (1 - b1)
    close(const["lr_t"], lr_t)
    counts = np.bincount(np.ravel(header["ids"]), minlength=len(rows))
    for row, p in rows.items():
        assert p["cnt"] == counts[row]
        w = p["w"]
        close(p["||w||"], np.linalg.norm(w))
        l2 = 2 * lam * w
        if counts[row]:
            close(p["l2"], l2)
            close(p["||g||"], np.linalg.norm(p["g"]))
            g_in = p["g"] + l2 if form == "reference" else p["g"]
        else:
            g_in = l2
        close(p["g_in"], g_in)
        close(p["||g_in||"], np.linalg.norm(g_in))
        clipped_here = counts[row] > 0 or form == "reference"   # the paper form leaves absent rows alone
        scale = 1.0
        if clipped_here:
            threshold = max(counts[row], 1) * max(r * np.linalg.norm(w), const["floor"])
            norm = np.linalg.norm(g_in)
            scale = threshold / norm if norm > threshold else 1.0
            close(p["threshold"], threshold)
            close(p["scale"], scale)
            assert p["kind"] == ("zero row" if norm == 0 else "clipped" if scale < 1 else
                                 "not clipped" if counts[row] else "absent from the batch")
        else:
            assert "scale" not in p
        g_adam = scale * g_in + (l2 if form == "paper" and counts[row] else 0.0)   # paper: L2 after the clip
        close(p["g_adam"], g_adam)
        m, v = (1 - b1) * g_adam, (1 - b2) * g_adam ** 2
        close(p["m"], m)
        close(p["v"], v)
        close(p["w_new"], w - lr_t * m / (np.sqrt(v) + eps))


def test_help_does_not_run_the_step():
    result = CliRunner().invoke(explain.main, ["--help"])
    assert result.exit_code == 0 and "Algorithm 1" in result.output and "== form" not in result.output


def test_the_reference_sparse_branch_clips_each_occurrence_alone(printed):
    header, forms = printed
    sparse, reference = forms["sparse"], forms["reference"]
    assert sparse["constants"]["ratio"] == header["r"]
    r, floor = header["r"], sparse["constants"]["floor"]
    counts = np.bincount(np.ravel(header["ids"]), minlength=8)
    gaps = []
    for row, p in sparse["rows"].items():
        occurrences = [value for key, value in p.items() if key.startswith("g_occurrence_")]
        assert p["cnt"] == counts[row] == len(occurrences)
        weight_norm = np.linalg.norm(reference["rows"][row]["w"])
        close(p["||w||"], weight_norm)
        g = np.sum(occurrences, axis=0)            # at l2 = 0 the row's gradient is the sum of its occurrences
        if reference["rows"][row]["kind"] != "zero row":
            close(g, reference["rows"][row]["g"])
        threshold = p["cnt"] * max(r * weight_norm, floor)           # Algorithm 1
        close(p["algorithm_1"], g * min(1.0, threshold / np.linalg.norm(g)))
        each = [o * (r * weight_norm) / max(np.linalg.norm(o), r * weight_norm) for o in occurrences]  # clip.py
        close(p["reference_sparse"], np.sum(each, axis=0))
        gap = np.linalg.norm(p["reference_sparse"] - p["algorithm_1"]) / np.linalg.norm(p["algorithm_1"])
        if gap > 1e-3:             # below, the printed digits cannot tell float32 rounding apart
            close(p["gap"], gap)
        gaps.append(p["gap"])
    assert set(sparse["rows"]) == {row for row in range(8) if counts[row]}
    assert max(gaps) > 0.5     # the branch changes the step: the audit finding is visible


def test_the_loss_printed_is_the_models_loss_on_the_batch(printed):
    model, params, batch = explain.tiny_setup()
    labels = batch.label.astype(np.float64)
    loss, _ = model.loss(params, batch, explain.get_backend("cpu"))
    _, forms = printed
    for form in ("reference", "paper"):
        close(forms[form]["constants"]["loss"], loss)
    assert 0 < loss < 5 and labels.min() == 0 and labels.max() == 1


def _adam_step(m_prev, v_prev, g, lr_t, b1, b2, eps):
    m = b1 * m_prev + (1 - b1) * g
    v = b2 * v_prev + (1 - b2) * g * g
    return -lr_t * m / (np.sqrt(v) + eps)


def test_side_by_side_updates_follow_adam_with_and_without_the_clip(output, printed):
    header, _ = printed
    side = parse_side(output)
    assert sorted(side) == [1, explain.LATER_STEP]
    b1, b2, eps = header["beta1"], header["beta2"], header["epsilon"]
    for t, section in side.items():
        lr_t = header["lr_embed"] * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        close(section["constants"]["lr_t"], lr_t)
        for row, p in section["rows"].items():
            dw_clip = _adam_step(p["m_prev"], p["v_prev"], p["scale"] * p["g_in"], lr_t, b1, b2, eps)
            dw_noclip = _adam_step(p["m_prev"], p["v_prev"], p["g_in"], lr_t, b1, b2, eps)
            np.testing.assert_allclose(p["dw_clip"], dw_clip, rtol=1e-4, atol=1e-9)
            np.testing.assert_allclose(p["dw_noclip"], dw_noclip, rtol=1e-4, atol=1e-9)
            assert p["kind"] == ("clipped" if p["scale"] < 1 else "not clipped")
            if p["scale"] == 1:   # a row the clip leaves alone moves identically in both runs
                assert np.array_equal(p["dw_clip"], p["dw_noclip"]), (t, row)


def test_the_clip_cancels_at_t_1_and_changes_the_step_later(output):
    side = parse_side(output)
    first = [p for p in side[1]["rows"].values() if p["kind"] == "clipped"]
    later = [p for p in side[explain.LATER_STEP]["rows"].values() if p["kind"] == "clipped"]
    assert first and later
    for p in first:       # Adam's first step is about lr_embed * sign(g): the scale cancels
        assert p["scale"] < 0.6 and abs(p["ratio_dw"] - 1) < 1e-3
    # later, the clipped rows move differently from the unclipped run, beyond float32 rounding
    assert max(abs(p["ratio_dw"] - 1) for p in later) > 0.01
    for p in later:
        assert np.max(np.abs(p["dw_clip"] - p["dw_noclip"])) > 1e-6


def test_every_printed_quantity_names_its_line_of_algorithm_1(output):
    lines = output.splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("== form"))
    quantities = [x for x in lines[start:] if re.match(r"[\w|]+ = ", x)]
    assert len(quantities) > 100
    untagged = [x for x in quantities if not re.search(r"# (.*\bL(3|4|5|6|7|8|9|10)\b|Input)", x)]
    assert untagged == []


def test_the_readmes_abridged_walk_is_the_real_output(output):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("`python -m validate.audit.explain` (abridged")
    block = readme[readme.index("```\n", start) + 4:]
    block = block[:block.index("```")]
    printed = set(output.splitlines())
    shown = [line for line in block.splitlines() if line != "..."]
    assert len(shown) > 10 and [line for line in shown if line not in printed] == []
