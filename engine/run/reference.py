"""How a run differs from what the reference train.py (bytedance/LargeBatchCTR) trains for the same
command line: the one line that `engine.train` prints before it starts.

Two kinds of difference, in this order on the line:
    values    a hyperparameter, the epochs, the log cadence, the split or the dataset resolved to
              something else than the reference's argparse default or the flag given
              (reference_values, value_differences)
    training  what this engine does otherwise for that command line (training_differences): the
              out-of-vocabulary row per field, the embedding initializer's seed, the loss form, a
              windowed shuffle of a train split too large for memory, the rule below the base
              batch, a warm-up of zero updates, the reference's untested sparse clip with --l2 0,
              the models the reference does not build, and the options it does not have.
The README's "Reference runs" lists the rest: what differs for every command line alike.
"""
from dataio.reader import IN_MEMORY_BYTES, WINDOW_SHARDS, split_bytes_in_memory
from engine.optim import warmup_updates
from engine.scaling import REFERENCE_DEFAULTS, resolve_auto
from models import MODELS

REFERENCE_EMBEDDING_SEED = 2020   # train.py: RandomNormal(stddev=init_stddev, seed=2020) for every table
SCALED_LR_RULES = ("sqrt", "linear", "cowclip")   # the rules that scale lr with the batch


def reference_values(opts: dict) -> dict:
    """What the reference train.py would train for the same command line: its defaults, then the
    reference flags given (ours default to None when the reference's default is a derived value)."""
    ref = dict(REFERENCE_DEFAULTS)
    for key in ("bs", "lr", "lr_embed", "l2", "clip", "bound", "warmup", "init_stddev", "epoch",
                "sparse_embed_dim", "dropout", "seed"):
        if opts.get(key) is not None:
            ref[key] = opts[key]
    if opts.get("log_every") is not None:
        ref["log_freq"] = opts["log_every"]
    return ref


def value_differences(cfg, opts: dict) -> list[str]:
    """'name ours (reference theirs)' for every resolved value that differs."""
    ref = reference_values(opts)
    ours = {**cfg.hp, "init_stddev": cfg.init_stddev, "epoch": cfg.epochs, "sparse_embed_dim": cfg.embed_dim,
            "dropout": cfg.dropout, "seed": cfg.seed, "log_freq": cfg.log_every}
    diffs = [f"{k} {ours[k]:.6g} (reference {ref[k]:.6g})" for k in ours
             if k in ref and abs(float(ours[k]) - float(ref[k])) > 1e-12 * max(abs(float(ref[k])), 1e-30)]
    ref_split = opts.get("split") or REFERENCE_DEFAULTS["split"]
    if cfg.split != ref_split:
        diffs.append(f"split {cfg.split} (reference {ref_split}; the data was made with {cfg.split})")
    ref_dataset = (opts.get("dataset") or REFERENCE_DEFAULTS["dataset"]).lower()
    if cfg.dataset not in ("synthetic", ref_dataset) and {cfg.dataset, ref_dataset} != {"criteo", "criteo_kaggle"}:
        diffs.append(f"dataset {cfg.dataset} (reference {ref_dataset}, its default; from the data's meta.json)")
    if cfg.embed_optim != "dense":
        diffs.append(f"embed_optim {cfg.embed_optim} (reference: dense, Adam on every row)")
    if cfg.clip_form != "reference" and cfg.hp["clip"] > 0:
        diffs.append(f"clip_form {cfg.clip_form} (reference: its clip.py form)")
    return diffs


def out_of_vocabulary_rows(meta: dict) -> int:
    """Fields whose vocabulary ends in an out-of-vocabulary id (dataio.preprocess writes one per field)."""
    return sum(1 for feature in meta.get("sparse_features", []) if "oov_id" in feature)


def training_differences(cfg, opts: dict, meta: dict) -> list[str]:
    """What this engine does otherwise than the reference train.py for this command line."""
    diffs = []
    model = MODELS[cfg.model]
    if cfg.model == "lr":
        diffs.append("model lr (reference: LR is among its --model choices, but train.py builds no model for it "
                     "and stops with a NameError)")
    if cfg.model == "dcnv2full":
        diffs.append("model dcnv2full, full-rank DCN-v2 (reference: none, its DCNv2 is DeepCTR's DCNMix, our dcnmix)")
    fields = out_of_vocabulary_rows(meta)
    if fields:
        per_row = (cfg.embed_dim if model.has_embed_table else 0) + 1      # embedding row + linear row
        diffs.append(f"an out-of-vocabulary row in each of the {fields} fields' tables (+{fields} rows, "
                     f"+{fields * per_row:,} parameters = {fields} x {per_row}, where the reference sizes each "
                     f"table by its train split's max id + 1)")
    if model.has_embed_table:
        diffs.append(f"embedding init from --seed {cfg.seed} with NumPy (reference: TF's RandomNormal with seed "
                     f"{REFERENCE_EMBEDDING_SEED} whatever --seed)")
    if cfg.loss_form == "exact":
        diffs.append("loss form exact logistic on logits, float64 optimizer constants (reference: Keras's "
                     "cross-entropy on probabilities clipped to [1e-7, 1 - 1e-7] and float32 constants: "
                     "--loss-form keras)")
    diffs += _windowed_shuffle(meta)
    diffs += _scaled_down(cfg, opts)
    diffs += _zero_warmup(cfg, meta)
    if cfg.hp["l2"] == 0 and cfg.hp["clip"] > 0 and model.has_embed_table:
        diffs.append("l2 0 with CowClip: the reference's embedding gradients stay sparse and its clip.py takes "
                     "its untested branch (each occurrence clipped alone to r * ||w_k||: no cnt_k, no floor), "
                     "while here Algorithm 1 (the per-id sum clipped to cnt_k * max(r * ||w_k||, floor))")
    if cfg.max_steps:
        diffs.append(f"max_steps {cfg.max_steps} (reference: every step of every epoch)")
    if cfg.early_stop:
        diffs.append(f"early_stop {cfg.early_stop} (reference: none, it reports the last epoch's test metrics)")
    return diffs


def _scaled_down(cfg, opts: dict) -> list[str]:
    """A batch below the base batch under a rule that scales: the rule lowers lr (and l2), say so."""
    rule = resolve_auto(cfg.bs, cfg.base_bs) if cfg.scale_rule == "auto" else cfg.scale_rule
    if rule not in SCALED_LR_RULES or cfg.bs >= cfg.base_bs:
        return []
    s = cfg.bs / cfg.base_bs
    factors = {"sqrt": {"lr": "sqrt(s)", "lr_embed": "sqrt(s)"}, "linear": {"lr": "s", "lr_embed": "s"},
               "cowclip": {"lr": "sqrt(s)", "l2": "s"}}[rule]
    scaled = [f"{name} x {factor}" for name, factor in factors.items() if opts.get(name) is None]
    if not scaled:
        return []
    name = "CowClip" if rule == "cowclip" else f"the {rule} rule"
    return [f"{name} below the base batch: --bs {cfg.bs} < --base-bs {cfg.base_bs}, so the {rule} rule scales "
            f"DOWN {', '.join(scaled)} with s = {cfg.bs}/{cfg.base_bs} = {s:.6g} (give --scale-rule none for the "
            f"base's values unscaled, --bs {cfg.base_bs} for the reference's defaults, or the values themselves)"]


def _windowed_shuffle(meta: dict) -> list[str]:
    """A train split too large to shuffle in memory is shuffled window by window (dataio/reader.py)."""
    rows = int(meta.get("splits", {}).get("train", {}).get("rows", 0))
    size = split_bytes_in_memory(rows, len(meta.get("sparse_features", [])), len(meta.get("dense_features", [])))
    if size <= IN_MEMORY_BYTES:
        return []
    return [f"batch order: the train split ({size / 1e9:.1f} GB) is over the {IN_MEMORY_BYTES >> 30} GiB shuffled in "
            f"memory, so each epoch permutes its shards and shuffles {WINDOW_SHARDS} shards' rows at a time "
            f"(reference: Keras fit shuffles all rows every epoch)"]


def _zero_warmup(cfg, meta: dict) -> list[str]:
    """--warmup > 0 that counts to zero updates: the reference's PolynomialDecay then divides 0 by 0."""
    train_rows = int(meta.get("splits", {}).get("train", {}).get("rows", 0))
    if cfg.hp["warmup"] <= 0 or not train_rows or warmup_updates(cfg.hp["warmup"], train_rows, cfg.bs) > 0:
        return []
    return [f"warmup {cfg.hp['warmup']:g} is int({cfg.hp['warmup']:g} * {train_rows // cfg.bs}) = 0 updates: the "
            f"reference's PolynomialDecay divides 0 by 0 and trains with a nan learning rate, here no warm-up"]


def differences_line(cfg, opts: dict, meta: dict) -> str:
    """Every way the run differs from the reference train.py for the same command line, on one line:
    the values, comma-separated, then '; and in how it trains: ' and the training differences, '; '-separated."""
    values, training = value_differences(cfg, opts), training_differences(cfg, opts, meta)
    head = ("differs from the reference train.py for this command line: " + ", ".join(values) if values else
            "reference: every value equals what the reference train.py uses for this command line")
    if not training:
        return head
    return head + "; and in how it trains: " + "; ".join(training)

