"""The reference's command lines resolve to the reference's runs: what the
command line decides, checked without training (engine.train.run is replaced by a recorder)."""
import json
import shutil

import pytest
from click.testing import CliRunner

from engine import train
from engine.scaling import REFERENCE_DEFAULTS

# bytedance/LargeBatchCTR README, Avazu table: (batch, lr, l2, zeta)
AVAZU_TABLE = [(1024, 1e-4, 1e-5, 1e-3), (2048, 1.41e-4, 2e-5, 1e-3), (4096, 2e-4, 4e-5, 1e-4),
               (8192, 2.83e-4, 8e-5, 1e-4), (16384, 4e-4, 16e-5, 1e-4), (32768, 5.66e-4, 32e-5, 1e-4),
               (65536, 8e-4, 64e-5, 1e-4), (131072, 16e-4, 96e-5, 1e-4)]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from dataio.synthetic import generate

    return generate(tmp_path_factory.mktemp("data") / "syn", rows=2000, seed=1, min_vocab=3, max_vocab=50)


def _as_kind(src, dst, kind: str, split: str = "rand", valid: bool = False):
    """A copy of a synthetic set whose meta.json says it was preprocessed from `kind` with `split`."""
    from dataio.meta import load_meta, write_meta

    shutil.copytree(src, dst)
    meta = load_meta(dst)
    meta.update(kind=kind, options={"split": split})
    meta.pop("bayes", None)
    write_meta(dst, meta)
    return str(dst)


@pytest.fixture(scope="module")
def criteo(synthetic, tmp_path_factory):
    return _as_kind(synthetic, tmp_path_factory.mktemp("c") / "criteo", "criteo")


@pytest.fixture(scope="module")
def avazu(synthetic, tmp_path_factory):
    return _as_kind(synthetic, tmp_path_factory.mktemp("a") / "avazu", "avazu")


@pytest.fixture
def resolved(monkeypatch, tmp_path):
    """Invoke the command line; -> (RunConfig it would train, exit code, output)."""
    seen = {}

    def record(cfg, out, resume, **hooks):
        seen["cfg"] = cfg
        return {"auc": 0.5, "logloss": 0.7, "steps": 0, "wall_seconds": 0.0}

    monkeypatch.setattr(train, "run", record)

    def invoke(*args):
        result = CliRunner().invoke(train.main, [*args, "--out", str(tmp_path / "run")])
        return seen.get("cfg"), result.exit_code, result.output
    return invoke


def test_reference_baseline_command_trains_the_reference_baseline(resolved, criteo):
    cfg, code, output = resolved("--data", criteo, "--dataset", "criteo_kaggle", "--model", "DeepFM",
                                 "--log_freq", "100")
    assert code == 0, output
    assert cfg.bs == 1024 and cfg.epochs == 10 and cfg.init_stddev == 1e-4 and cfg.model == "deepfm"
    for key in ("lr", "lr_embed", "l2", "clip", "bound", "warmup"):
        assert cfg.hp[key] == REFERENCE_DEFAULTS[key], key
    assert (cfg.hp["lr"], cfg.hp["lr_embed"], cfg.hp["l2"], cfg.hp["clip"], cfg.hp["bound"]) == \
        (1e-4, 1e-4, 1e-5, 0.0, 0.0)
    assert "every value equals what the reference train.py uses" in output
    # without --log_freq our logging cadence is the one difference, and it is said
    cfg, code, output = resolved("--data", criteo, "--dataset", "criteo_kaggle", "--model", "DeepFM")
    assert "differs from the reference train.py for this command line: log_freq 10 (reference 100)" in output


def test_the_main_job_keeps_cowclip_at_128k_from_the_1k_base(resolved, synthetic):
    cfg, code, output = resolved("--model", "deepfm", "--bs", "131072", "--data", str(synthetic))
    assert code == 0, output
    assert cfg.hp["lr"] == pytest.approx(90.5096e-4, abs=1e-8) and cfg.hp["l2"] == pytest.approx(128e-5)
    assert (cfg.hp["lr_embed"], cfg.hp["clip"], cfg.hp["bound"], cfg.hp["warmup"], cfg.init_stddev) == \
        (1e-4, 1.0, 1e-5, 1.0, 1e-2)
    assert cfg.epochs == 4 and cfg.dataset == "synthetic"
    assert "scale rule auto -> cowclip" in output
    for said in ("lr 0.00905097 (reference 0.0001)", "l2 0.00128 (reference 1e-05)", "clip 1 (reference 0)",
                 "init_stddev 0.01 (reference 0.0001)", "epoch 4 (reference 10)"):
        assert said in output, said


def test_a_published_cowclip_command_differs_from_nothing(resolved, criteo):
    args = ("--data", criteo, "--dataset", "criteo_kaggle", "--model", "DeepFM", "--lr_embed", "1e-4",
            "--warmup", "1", "--init_stddev", "1e-2", "--clip", "1", "--bound", "1e-5", "--bs", "131072",
            "--l2", "128e-05", "--lr", "90.5096e-4", "--log_freq", "100", "--eager", "--opt", "adam")
    cfg, code, output = resolved(*args)
    assert code == 0, output
    assert "every value equals what the reference train.py uses" in output


@pytest.mark.parametrize("bs,lr,l2,bound", AVAZU_TABLE)
def test_avazu_data_gives_the_avazu_table(resolved, avazu, bs, lr, l2, bound):
    # the kind comes from meta.json; the 1K row is the CowClip rule's (auto trains the baseline there)
    rule = ["--scale-rule", "cowclip"] if bs == 1024 else []
    cfg, code, output = resolved("--data", avazu, "--bs", str(bs), *rule)
    assert code == 0, output
    assert cfg.dataset == "avazu" and "dataset avazu (reference criteo_kaggle, its default" in output
    assert abs(cfg.hp["lr"] - lr) < 0.01e-4 and cfg.hp["l2"] == pytest.approx(l2) and cfg.hp["bound"] == bound


@pytest.mark.parametrize("args,message", [
    (["--dataset", "avazu"], "--dataset avazu contradicts"),
    (["--split", "highfreq"], "--split highfreq contradicts"),
    (["--opt", "sgd"], "--opt sgd: not implemented"),
    (["--early-stop", "2"], "--early-stop needs a 'valid' split"),
])
def test_contradictions_stop_with_one_line(resolved, criteo, args, message):
    cfg, code, output = resolved("--data", criteo, *args)
    assert code != 0 and cfg is None
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in output, output


def test_the_recorded_split_is_used_and_said(resolved, synthetic, tmp_path):
    seq = _as_kind(synthetic, tmp_path / "seq", "criteo", split="seq")
    cfg, code, output = resolved("--data", seq)
    assert code == 0 and cfg.split == "seq" and "split seq (reference rand" in output
    assert resolved("--data", seq, "--split", "seq")[0].split == "seq"


def test_the_reference_spelling_dcnv2_builds_dcnmix(resolved, criteo):
    assert resolved("--data", criteo, "--model", "DCNv2")[0].model == "dcnmix"
    assert resolved("--data", criteo, "--model", "dcnv2full")[0].model == "dcnv2full"
    from models import MODELS, DCNMix, DCNv2, canonical_model_name

    assert MODELS[canonical_model_name("DCNv2")] is DCNMix and MODELS["dcnv2full"] is DCNv2


def test_config_file_reruns_a_saved_run_with_flags_winning(resolved, criteo, tmp_path):
    first, code, _ = resolved("--data", criteo, "--bs", "4096", "--model", "wdl", "--seed", "7", "--clip", "0.5")
    assert code == 0
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps(first.__dict__))
    again, code, output = resolved("--config", str(saved))
    assert code == 0, output
    assert again == first
    changed, code, _ = resolved("--config", str(saved), "--lr", "3e-3", "--seed", "8")
    assert changed.hp["lr"] == 3e-3 and changed.seed == 8 and changed.model == "wdl"
    assert changed.hp["clip"] == 0.5 and changed.hp["l2"] == first.hp["l2"]
    # a flag the scaling rule reads makes it derive the hyperparameters anew
    rescaled, code, _ = resolved("--config", str(saved), "--bs", "16384")
    assert rescaled.hp["l2"] == pytest.approx(16 * 1e-5) and rescaled.hp["clip"] == 1.0


def test_builtin_data_announces_its_generation(resolved, synthetic, tmp_path, monkeypatch):
    import dataio.synthetic

    monkeypatch.setenv("COWCLIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(dataio.synthetic, "ensure_default", lambda: synthetic)
    cfg, code, output = resolved("--bs", "2048")
    assert code == 0, output
    assert f"generating the built-in synthetic Criteo-shaped set once: 4,000,000 rows into {tmp_path / 'cache'}" \
        in output and "reused afterwards" in output
