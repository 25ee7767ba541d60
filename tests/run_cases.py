"""What the run-reliability tests share: a tiny LR data set (6 steps an epoch at --bs 512, seconds
a run) and a way to run the command as a user would."""
import json

import pytest
from click.testing import CliRunner

from engine import train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from dataio.synthetic import generate

    return str(generate(tmp_path_factory.mktemp("data") / "tiny", rows=3000, seed=3, min_vocab=3, max_vocab=100))


def base(data):
    return ["--model", "lr", "--data", data, "--bs", "512", "--epoch", "1", "--device", "cpu"]


def invoke(main, args):
    """Run a command as a user would; a user mistake must end in a one-line error, never a traceback."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exit_code != 0:
        assert isinstance(result.exception, SystemExit), f"traceback: {result.exception!r}\n{result.output}"
        assert "Traceback" not in result.output
    return result


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, which are not JSON."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def steps_logged(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["step"] for r in map(json.loads, lines) if r["type"] == "step"]


def trained(data, out, *more):
    result = invoke(train.main, [*base(data), "--out", out, *more])
    assert result.exit_code == 0, result.output
    return result


def checkpointed_run(data, tmp_path):
    out = tmp_path / "r"
    trained(data, out, "--max-steps", "2")
    return out
