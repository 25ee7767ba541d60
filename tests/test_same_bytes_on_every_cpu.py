"""What the data layer stores does not depend on the CPU: NumPy picks SIMD code per CPU at run time
(NPY_DISABLE_CPU_FEATURES turns targets off), and the synthetic set, its meta.json and every
preprocessing transform come out bit for bit the same under each target this machine offers; one
recorded digest pins the synthetic set itself. The exact pieces are tested directly as well:
portable_math against Python's math, the criteo_x4 buckets at their thresholds against decimal
arithmetic, the Zipf ranks against a plain binary search."""
import decimal
import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dataio import portable_math as pm
from dataio.meta import load_meta
from dataio.synthetic import generate, rank_cdf, rank_of_uniform
from dataio.transforms import bucket_x4, log_apply, x4_thresholds
from dataio_digests import SYNTHETIC, dataset_digest

ROOT = Path(__file__).resolve().parents[1]
DIGESTS = Path(__file__).with_name("dataio_digests.py")
PROBE = """import json
try:
    from numpy._core import _multiarray_umath as m
except ImportError:
    from numpy.core import _multiarray_umath as m
print(json.dumps([t for t in m.__cpu_dispatch__ if m.__cpu_features__.get(t)]))"""


def _env(disabled: list[str]) -> dict:
    env = dict(os.environ, NPY_DISABLE_CPU_FEATURES=" ".join(disabled))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _enabled_targets(disabled: list[str]) -> tuple | None:
    """The SIMD targets NumPy uses with `disabled` turned off; None if NumPy refuses the setting."""
    run = subprocess.run([sys.executable, "-c", PROBE], env=_env(disabled), capture_output=True, text=True)
    return tuple(json.loads(run.stdout)) if run.returncode == 0 else None


def dispatch_settings() -> list[list[str]]:
    """NPY_DISABLE_CPU_FEATURES settings that give NumPy different SIMD targets on this CPU: none
    disabled, then the best target off, the two best off, ... (settings with the same targets once)."""
    available = list(_enabled_targets([]) or ())
    settings = {}
    for first in range(len(available), -1, -1):
        disabled = available[first:]
        targets = _enabled_targets(disabled)
        if targets is not None:
            settings.setdefault(targets, disabled)
    return list(settings.values())


def test_stored_bytes_are_the_same_under_every_simd_target_numpy_can_pick():
    settings = dispatch_settings()
    if len(settings) < 2:
        pytest.skip("NumPy has a single SIMD target on this CPU: no second code path to compare")
    results = {}
    for disabled in settings:
        run = subprocess.run([sys.executable, str(DIGESTS)], env=_env(disabled), cwd=ROOT,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        results[" ".join(disabled) or "(nothing)"] = json.loads(run.stdout)
    (first_name, first), *others = results.items()
    changed = {name: sorted(k for k in first if got[k] != first[k]) for name, got in others}
    assert not {k: v for k, v in changed.items() if v}, \
        f"stored bytes that change with NPY_DISABLE_CPU_FEATURES (against {first_name}): {changed}"


# generate(rows=30_000, seed=3, max_vocab=2_000): arrays of every split and meta.json, Bayes metrics included.
GOLDEN = "16cfed09f99ff590de319c82d945dee501dc30c0e44850633d8a7873414d169b"
GOLDEN_BAYES = {"test_auc": 0.8420284483807501, "test_logloss": 0.42160394087201297}


def test_synthetic_set_matches_its_recorded_digest(tmp_path):
    path = generate(tmp_path / "syn", **SYNTHETIC)
    assert load_meta(path)["bayes"] == GOLDEN_BAYES
    assert dataset_digest(path) == GOLDEN


def _ulps(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    return np.abs(got - want) / np.spacing(np.abs(want))


@pytest.mark.parametrize("name, x", [
    ("exp", np.concatenate([np.linspace(-700, 700, 20_001), np.linspace(-1, 1, 10_001)])),
    ("log", np.concatenate([np.geomspace(1e-300, 1e300, 20_001), np.linspace(0.5, 2, 10_001), np.arange(1, 5e3)])),
    ("log1p", np.concatenate([np.geomspace(1e-20, 1e20, 20_001), -np.geomspace(1e-20, 0.99, 10_001)])),
])
def test_portable_math_is_within_one_ulp_of_pythons_math(name, x):
    got, want = getattr(pm, name)(x), np.array([getattr(math, name)(v) for v in x])
    assert _ulps(got, want).max() <= 1.0


def test_portable_math_edges():
    assert list(pm.exp(np.array([-np.inf, -800.0, 0.0, 800.0, np.inf]))) == [0.0, 0.0, 1.0, np.inf, np.inf]
    assert pm.exp(np.array([-744.0]))[0] == math.exp(-744.0)                    # subnormal result
    assert list(pm.log(np.array([0.0, 1.0, np.inf]))) == [-np.inf, 0.0, np.inf]
    assert pm.log(np.array([5e-324]))[0] == math.log(5e-324)                    # subnormal argument
    assert list(pm.sigmoid(np.array([-np.inf, 0.0, np.inf]))) == [0.0, 0.5, 1.0]
    x = np.linspace(-40, 40, 3 * 70_000).reshape(3, 70_000, 1)         # more than one block
    assert pm.sigmoid(x).shape == x.shape
    np.testing.assert_allclose(pm.sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-14, atol=0)


def test_portable_math_bits_are_the_recorded_ones():
    x = np.linspace(-30, 30, 100_003)
    h = hashlib.sha256()
    for f in (pm.exp(x), pm.log(np.abs(x)), pm.log1p(np.abs(x)), pm.sigmoid(x)):
        h.update(f.tobytes())
    assert h.hexdigest()[:16] == "c3629768c056ee6b"


def _floor_ln_squared(x: float) -> int:
    """floor(ln(x)^2) of the double x as a real number, by 50-digit decimal arithmetic."""
    ctx = decimal.Context(prec=50)
    return int(ctx.power(ctx.ln(decimal.Decimal(x)), 2).to_integral_value(decimal.ROUND_FLOOR))


def test_x4_buckets_are_exact_on_both_sides_of_every_threshold():
    t = x4_thresholds(1e30)[:3_000]
    below = np.nextafter(t, 0.0)
    b = np.arange(1, len(t) + 1)
    assert np.array_equal(bucket_x4(t), b) and np.array_equal(bucket_x4(below), b - 1)
    for i in range(0, len(t), 97):                       # the thresholds themselves, checked independently
        assert (_floor_ln_squared(t[i]), _floor_ln_squared(below[i])) == (b[i], b[i] - 1)


def test_x4_buckets_equal_the_reference_formula_on_integer_counts():
    x = np.arange(-5, 1_000_000, dtype=np.float64)
    # floor(ln(k)^2) is at least 4e-8 from an integer for every integer k < 10^7, so any libm agrees here
    want = np.where(x > 2, np.floor(np.log(np.maximum(x, 1.0)) ** 2), np.trunc(x)).astype(np.int64)
    assert np.array_equal(bucket_x4(x.reshape(-1, 5)).ravel(), want)


def test_log_transform_is_ln_1_plus_x_clipped_at_0():
    x = np.array([[-3.0, 0.0, 1e-12, 0.5, 7.0, 123456.0]])
    want = np.array([[0.0, 0.0, 1e-12, math.log1p(0.5), math.log(8.0), math.log(123457.0)]], dtype=np.float32)
    assert np.array_equal(log_apply(x), want)


@pytest.mark.parametrize("ranks, s", [(9, 1.05), (2_000, 1.2), (300_000, 1.4)])
def test_zipf_ranks_are_those_of_a_binary_search_in_the_table(ranks, s):
    cdf = rank_cdf(ranks, s)
    assert cdf[0] == 0.0 and cdf[-1] == np.inf and (np.diff(cdf[:-1]) >= 0).all()
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.random(200_000) * (1 - 1e-12), cdf[:-1], np.nextafter(cdf[1:-1], 0.0)])
    want = np.searchsorted(cdf, v, side="right") - 1
    assert np.array_equal(rank_of_uniform(v, cdf, s), want)
    assert want.min() == 0 and want.max() == ranks - 1
