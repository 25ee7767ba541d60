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
    (["--split", "highfreq"], "--split highfreq: the reference's train.py lists it, but its data_utils.py"),
    (["--split", "seq"], "--split seq contradicts"),
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


# ---------------------------------------------------------------------------------------------
# the differences line: each of the engine's own differences, exactly when it applies

@pytest.fixture(scope="module")
def preprocessed(synthetic, tmp_path_factory):
    """A Criteo-kind copy whose meta.json gives every field an out-of-vocabulary id, as dataio.preprocess."""
    from dataio.meta import load_meta, write_meta

    path = _as_kind(synthetic, tmp_path_factory.mktemp("p") / "criteo", "criteo")
    meta = load_meta(path)
    for feature in meta["sparse_features"]:
        feature["oov_id"] = feature["vocab_size"] - 1
    write_meta(path, meta)
    return path


def _training_part(output: str) -> str:
    """The part of the differences line after 'and in how it trains:' ('' when absent)."""
    line = next(line for line in output.splitlines()
                if line.startswith(("differs from the reference", "reference: every value")))
    return line.partition("; and in how it trains: ")[2]


def test_the_out_of_vocabulary_rows_are_counted_for_the_model_at_hand(resolved, preprocessed, criteo):
    fields = 26
    said = _training_part(resolved("--data", preprocessed, "--model", "DeepFM")[2])
    assert f"an out-of-vocabulary row in each of the {fields} fields' tables (+26 rows, +286 parameters = 26 x 11" \
        in said                                                    # 26 x (embedding dim 10 + 1 linear)
    said = _training_part(resolved("--data", preprocessed, "--model", "DeepFM", "--sparse_embed_dim", "16")[2])
    assert "+442 parameters = 26 x 17" in said
    said = _training_part(resolved("--data", preprocessed, "--model", "lr")[2])
    assert "+26 parameters = 26 x 1" in said                      # LR: the linear table only
    assert "out-of-vocabulary" not in _training_part(resolved("--data", criteo)[2])   # no OOV ids recorded


def test_the_published_command_differs_only_in_how_the_engine_trains(resolved, preprocessed):
    args = ("--data", preprocessed, "--dataset", "criteo_kaggle", "--model", "DeepFM", "--lr_embed", "1e-4",
            "--warmup", "1", "--init_stddev", "1e-2", "--clip", "1", "--bound", "1e-5", "--bs", "1024",
            "--l2", "128e-05", "--lr", "90.5096e-4", "--log_freq", "100", "--seed", "1234")
    cfg, code, output = resolved(*args)
    assert code == 0, output
    assert "reference: every value equals what the reference train.py uses for this command line" in output
    said = _training_part(output).split("; ")
    assert [item.split(" (")[0] for item in said] == [
        "an out-of-vocabulary row in each of the 26 fields' tables",
        "embedding init from --seed 1234 with NumPy",
        "loss form exact logistic on logits, float64 optimizer constants"]
    assert "seed 2020 whatever --seed" in said[1] and "--loss-form keras" in said[2]
    said = _training_part(resolved(*args, "--loss-form", "keras")[2])
    assert "loss form" not in said and "embedding init from --seed 1234" in said


@pytest.mark.parametrize("args,present", [
    (["--l2", "0", "--clip", "1"], True),
    (["--l2", "0", "--clip", "0.5", "--bs", "4096"], True),
    (["--l2", "0"], False),                                  # the baseline: no CowClip
    (["--l2", "0", "--clip", "0"], False),
    (["--l2", "1e-5", "--clip", "1"], False),
    (["--bs", "4096"], False),                               # the rule's l2 is not 0
    (["--l2", "0", "--clip", "1", "--model", "lr"], False),  # no embedding table to clip
])
def test_the_untested_sparse_branch_is_named_exactly_when_l2_is_0_and_cowclip_is_on(resolved, criteo, args,
                                                                                   present):
    cfg, code, output = resolved("--data", criteo, *args)
    assert code == 0, output
    said = _training_part(output)
    assert ("its clip.py takes its untested branch" in said) is present, said
    if present:
        assert "each occurrence clipped alone to r * ||w_k||: no cnt_k, no floor" in said
        assert "while here Algorithm 1" in said


@pytest.mark.parametrize("args,said", [
    (["--bs", "512"], "CowClip below the base batch: --bs 512 < --base-bs 1024, so the cowclip rule scales DOWN "
                      "lr x sqrt(s), l2 x s with s = 512/1024 = 0.5"),
    (["--bs", "256", "--lr", "1e-3"], "the cowclip rule scales DOWN l2 x s with s = 256/1024 = 0.25"),
    (["--bs", "512", "--scale-rule", "sqrt"], "the sqrt rule scales DOWN lr x sqrt(s), lr_embed x sqrt(s)"),
    (["--bs", "512", "--scale-rule", "linear", "--lr_embed", "1e-4"], "the linear rule scales DOWN lr x s with"),
])
def test_a_batch_below_the_base_batch_says_the_rule_scales_down(resolved, criteo, args, said):
    cfg, code, output = resolved("--data", criteo, *args)
    assert code == 0, output
    assert said in _training_part(output)


@pytest.mark.parametrize("args", [["--bs", "2048"], ["--bs", "512", "--scale-rule", "none"],
                                  ["--bs", "512", "--lr", "1e-3", "--l2", "1e-5"], []])
def test_no_scaling_down_is_said_when_nothing_is_scaled_down(resolved, criteo, args):
    assert "below the base batch" not in _training_part(resolved("--data", criteo, *args)[2])


def test_a_warmup_of_zero_updates_and_the_engines_own_options_are_said(resolved, criteo):
    # 1,800 training rows: --bs 1500 gives int(1800 / 1500) = 1 whole batch an epoch
    said = _training_part(resolved("--data", criteo, "--bs", "1500", "--warmup", "0.5")[2])
    assert "warmup 0.5 is int(0.5 * 1) = 0 updates: the reference's PolynomialDecay divides 0 by 0" in said
    for args in (["--bs", "1500", "--warmup", "1"], ["--bs", "1500", "--warmup", "0"],
                 ["--bs", "512", "--warmup", "0.5"]):
        assert "PolynomialDecay" not in _training_part(resolved("--data", criteo, *args)[2]), args
    said = _training_part(resolved("--data", criteo, "--max-steps", "7")[2])
    assert "max_steps 7 (reference: every step of every epoch)" in said
    assert "max_steps" not in _training_part(resolved("--data", criteo)[2])


def test_the_models_the_reference_does_not_build_are_said(resolved, criteo):
    assert "train.py builds no model for it and stops with a NameError" in \
        _training_part(resolved("--data", criteo, "--model", "LR")[2])
    assert "model dcnv2full, full-rank DCN-v2 (reference: none" in \
        _training_part(resolved("--data", criteo, "--model", "dcnv2full")[2])
    for name in ("DeepFM", "WD", "DCN", "DCNv2", "FM"):
        assert "model " not in _training_part(resolved("--data", criteo, "--model", name)[2]).split(";")[0], name


def test_early_stopping_is_said(resolved, tmp_path):
    from dataio.synthetic import generate

    data = generate(tmp_path / "with_valid", rows=600, seed=2, min_vocab=3, max_vocab=20, valid_fraction=0.1)
    said = _training_part(resolved("--data", str(data), "--early-stop", "3")[2])
    assert "early_stop 3 (reference: none, it reports the last epoch's test metrics)" in said
    assert "early_stop" not in _training_part(resolved("--data", str(data))[2])


def test_a_batch_below_the_base_says_the_rule_scales_down(resolved, criteo):
    cfg, code, output = resolved("--data", criteo, "--bs", "32")
    assert code == 0, output
    assert cfg.hp["clip"] > 0 and cfg.hp["lr"] < 8e-4
    line = next(x for x in output.splitlines() if x.startswith("differs from the reference"))
    assert "CowClip below the base batch: --bs 32 < --base-bs 1024" in line and "DOWN" in line
    cfg, code, output = resolved("--data", criteo, "--bs", "2048")
    assert code == 0 and "below the base batch" not in output


def test_a_train_split_too_large_for_memory_says_its_windowed_shuffle(resolved, criteo, monkeypatch):
    from dataio.reader import BatchReader
    from engine.run import reference

    assert "batch order" not in _training_part(resolved("--data", criteo)[2])    # 1,800 rows: shuffled in memory
    small = 1000     # bytes: the 1,800-row split no longer fits, as full Criteo (about 6.6 GB) does not fit 4 GiB
    monkeypatch.setattr(reference, "IN_MEMORY_BYTES", small)
    said = _training_part(resolved("--data", criteo)[2])
    assert "batch order: the train split (0.0 GB) is over the 0 GiB shuffled in memory" in said
    assert "shuffles 4 shards' rows at a time (reference: Keras fit shuffles all rows every epoch)" in said
    assert not BatchReader(criteo, "train", 32, in_memory_bytes=small).in_memory     # the reader agrees
    # full Criteo: 45,840,617 rows less ceil(10 %) for test; 26 ids, 13 features and a label a row
    monkeypatch.setattr(reference, "IN_MEMORY_BYTES", 4 << 30)
    criteo_meta = {"splits": {"train": {"rows": 41_256_555}}, "sparse_features": [{}] * 26, "dense_features": [{}] * 13}
    assert reference._windowed_shuffle(criteo_meta)[0].startswith(
        "batch order: the train split (6.6 GB) is over the 4 GiB shuffled in memory")
