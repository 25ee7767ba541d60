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
    """-> (header values, {form: {"constants": {...}, "rows": {row: {label: value, "kind": ...}}}})."""
    header, forms, form, row = {}, {}, None, None
    for line in output.splitlines():
        if m := re.match(r"== form (\w+) ==", line):
            form, row = m.group(1), None
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


@pytest.fixture(scope="module")
def printed():
    result = CliRunner().invoke(explain.main, [], catch_exceptions=False)
    assert result.exit_code == 0
    return parse(result.output)


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
