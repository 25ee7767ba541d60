"""Every numeric option of engine.train is range-checked before anything runs (engine/run/options.py)."""

import pytest

from engine import train
from run_cases import base, data, invoke  # noqa: F401 (tests/; data is a fixture)


BAD_OPTIONS = [  # (case, option, value): each is a click usage error naming the option (exit 2)
    ("15.8", "--lr", "-1"), ("15.8", "--lr_embed", "-1"), ("15.8", "--l2", "-0.5"), ("15.8", "--dropout", "1.5"),
    ("15.8", "--dropout", "1"), ("15.8", "--max-steps", "-5"), ("15.8", "--lr", "nan"), ("15.8", "--clip", "inf"),
    ("15.13", "--epoch", "0"), ("15.13", "--epoch", "-2"), ("15.13", "--log-every", "0"), ("15.13", "--base-bs", "0"),
    ("15.13", "--bs", "-256"), ("15.13", "--bs", "0"), ("15.13", "--sparse_embed_dim", "0"),
    ("15.13", "--init_stddev", "-1"), ("15.13", "--seed", "-1"), ("15.13", "--accum", "0"),
    ("15.13", "--eval-every", "-1"), ("15.13", "--checkpoint-every", "-1"), ("15.13", "--warmup", "-1"),
]


@pytest.mark.parametrize("case,option,value", BAD_OPTIONS)
def test_numeric_options_are_range_checked(data, tmp_path, case, option, value):
    out = tmp_path / "r"
    result = invoke(train.main, [*base(data), "--out", out, option, value])
    assert result.exit_code == 2, result.output
    assert option in result.output.splitlines()[-1] and "Invalid value" in result.output
    assert not out.exists()
