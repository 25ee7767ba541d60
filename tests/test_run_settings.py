"""Settings from every source are checked alike: a --config file and a hand-edited RUN/config.json on
--resume go through the command line's own click types and ranges, and a bad value is a one-line error
naming the file and the key. --config plus a new batch resolves exactly as the same command line.

Runs use the LR model on a 3,000-row synthetic set (6 steps an epoch at --bs 512): seconds each.
"""
import json
import math

import pytest
from click.testing import CliRunner

from engine import train
from engine.run.cli import apply_config_file
from engine.run.config import resolve


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from dataio.synthetic import generate

    return str(generate(tmp_path_factory.mktemp("data") / "tiny", rows=3000, seed=3, min_vocab=3, max_vocab=100))


@pytest.fixture(scope="module")
def saved_run(data, tmp_path_factory):
    """A run directory with a checkpoint (2 steps): its config.json is what engine.train writes."""
    out = tmp_path_factory.mktemp("runs") / "base"
    result = CliRunner().invoke(train.main, ["--model", "lr", "--data", data, "--bs", "512", "--epoch", "1",
                                             "--device", "cpu", "--max-steps", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def one_line_error(args, *expected):
    result = CliRunner().invoke(train.main, [str(a) for a in args])
    assert result.exit_code != 0, f"accepted: {result.output}"
    assert isinstance(result.exception, SystemExit), f"traceback: {result.exception!r}\n{result.output}"
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


DELETE = object()   # edited(saved, key, DELETE): the key removed


def edited(saved: dict, key: str, value) -> dict:
    config = json.loads(json.dumps(saved))
    if key.startswith("hp."):
        config["hp"][key[3:]] = value
    elif value is DELETE:
        del config[key]
    else:
        config[key] = value
    return config


# (key, value, words the one-line error must hold beside the file's name)
BAD_VALUES = [
    ("hp.lr", -5, ["'hp.lr'", "-5"]),
    ("dropout", 1.5, ["'dropout'", "1.5"]),
    ("epochs", 0, ["'epochs'", "0"]),
    ("max_steps", -1, ["'max_steps'", "-1"]),
    ("hp.clip", math.nan, ["'hp.clip'", "nan"]),
    ("bs", 64.7, ["'bs'", "64.7", "integer"]),
    ("log_every", 0, ["'log_every'"]),
    ("epochs", "3", ["'epochs'", '"3"', "integer"]),
    ("batch_size", 512, ["unknown key 'batch_size'", "did you mean 'bs'"]),
    ("seed", DELETE, ["no 'seed'"]),
    ("audit", "yes", ["'audit'", "true or false"]),
    ("embed_optim", "sparse", ["'embed_optim'", "sparse"]),
    ("model", "resnet", ["'model'", "resnet"]),
    ("hp.momentum", 0.9, ["unknown key 'hp.momentum'"]),
]


@pytest.mark.parametrize("key, value, words", BAD_VALUES, ids=[f"{k}=absent" if v is DELETE else f"{k}={v!r}" for k, v, _ in BAD_VALUES])
def test_a_bad_value_in_a_config_file_is_refused_naming_file_and_key(saved_run, tmp_path, key, value, words):
    saved = json.loads((saved_run / "config.json").read_text())
    path = tmp_path / "config.json"
    path.write_text(json.dumps(edited(saved, key, value)))
    one_line_error(["--config", path, "--out", tmp_path / "run", "--max-steps", "1"], str(path), *words)
    assert not (tmp_path / "run" / "checkpoint").exists()


@pytest.mark.parametrize("key, value, words", BAD_VALUES, ids=[f"{k}=absent" if v is DELETE else f"{k}={v!r}" for k, v, _ in BAD_VALUES])
def test_a_hand_edited_config_is_refused_on_resume_naming_file_and_key(data, tmp_path, key, value, words):
    out = tmp_path / "run"
    result = CliRunner().invoke(train.main, ["--model", "lr", "--data", data, "--bs", "512", "--epoch", "1",
                                             "--device", "cpu", "--max-steps", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(edited(saved, key, value)))
    before = (out / "checkpoint" / "arrays.npz").read_bytes()
    one_line_error(["--resume", "--out", out, "--max-steps", "4"], str(out / "config.json"), *words)
    assert (out / "checkpoint" / "arrays.npz").read_bytes() == before


@pytest.mark.parametrize("text, words", [
    ("[1, 2]", ["holds a JSON list", "JSON object"]),
    ("model: lr\nbs: 512\n", ["not JSON", "YAML"]),
    ('{"model": "lr",', ["not JSON"]),
    (b"\xff\xfe{}", ["not UTF-8"]),
], ids=["a JSON list", "YAML", "cut JSON", "not UTF-8"])
def test_a_config_file_that_is_not_a_json_object_is_refused(tmp_path, text, words):
    path = tmp_path / "config.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    error = one_line_error(["--config", path, "--out", tmp_path / "run"], str(path), *words)
    assert "damaged" not in error


def test_the_config_file_and_the_command_line_share_one_range(saved_run):
    """The ranges come from the command's click parameters: changing one changes both."""
    from engine.run.settings import SettingsError, read_settings

    params = {p.name: p for p in train.main.params}
    saved = read_settings(saved_run / "config.json", params)
    assert saved["bs"] == 512 and saved["hp"]["lr"] > 0
    params["dropout"].type.max = 0.0   # the command line's range, narrowed
    try:
        with pytest.raises(SettingsError, match="'dropout'"):
            read_settings(saved_run / "config.json", params)
    finally:
        params["dropout"].type.max = 1.0


def test_flags_given_beside_the_config_may_fill_what_it_lacks(saved_run, tmp_path, data):
    saved = json.loads((saved_run / "config.json").read_text())
    path = tmp_path / "config.json"
    path.write_text(json.dumps(edited(saved, "seed", DELETE)))
    opts = _options(["--config", str(path), "--seed", "7"])
    cfg, _ = resolve(opts, frozenset())
    assert cfg.seed == 7 and cfg.bs == 512


def _options(args: list) -> dict:
    """The options engine.train's main works on for `args`, --config applied."""
    ctx = train.main.make_context("train", list(args))
    return apply_config_file(ctx, dict(ctx.params))


def test_a_config_plus_a_new_batch_resolves_as_that_command_line(saved_run, data):
    """--config base/config.json --bs 8192 resolves as --bs 8192 alone would: every hyperparameter and
    init_stddev derived anew for the new batch (the baseline's 1e-4 init_stddev is not kept)."""
    base_cfg, _ = resolve(_options(["--config", str(saved_run / "config.json")]), frozenset())
    from_config, _ = resolve(_options(["--config", str(saved_run / "config.json"), "--bs", "8192"]), frozenset())
    command_line, _ = resolve(_options(["--model", "lr", "--data", data, "--epoch", "1", "--device", "cpu",
                                        "--max-steps", "2", "--bs", "8192"]), frozenset())
    assert from_config == command_line
    assert from_config.init_stddev == 1e-2 and from_config.hp["lr"] != base_cfg.hp["lr"]


def test_a_baseline_config_plus_a_new_batch_drops_its_init_stddev(data, tmp_path):
    """The baseline (bs = base_bs: the reference's defaults, init_stddev 1e-4) plus --bs 8192."""
    out = tmp_path / "base"
    result = CliRunner().invoke(train.main, ["--model", "lr", "--data", data, "--bs", "1024", "--epoch", "1",
                                             "--device", "cpu", "--max-steps", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["init_stddev"] == 1e-4
    from_config, _ = resolve(_options(["--config", str(out / "config.json"), "--bs", "8192"]), frozenset())
    command_line, _ = resolve(_options(["--model", "lr", "--data", data, "--epoch", "1", "--device", "cpu",
                                        "--max-steps", "1", "--bs", "8192"]), frozenset())
    assert from_config == command_line and from_config.init_stddev == 1e-2


def test_a_config_without_a_new_batch_keeps_the_saved_values(saved_run):
    saved = json.loads((saved_run / "config.json").read_text())
    cfg, _ = resolve(_options(["--config", str(saved_run / "config.json")]), frozenset())
    assert cfg.hp == saved["hp"] and cfg.init_stddev == saved["init_stddev"]
