"""The benchmark problem, shared by validate/speed/bench.py, validate/speed/torch_twin.py, validate/speed/ab.py and
validate/device_check.py: a Criteo-shaped schema, parameters, batches and step configuration.

Symbols: B batch, F = 26 sparse fields, D = 13 dense features, K = 10 embedding dim, V table rows,
H = 400 hidden width.

Field sizes are Criteo Kaggle's 26 vocabularies (V = 33,762,577 in all, `criteo`) or the same
shape at 1/100 (V = 337,630, `small`). Ids of field f are Zipf(1.2) ranks, wrapped into [0, V_f)
and scattered over the field's rows by a multiplicative hash (rank * p mod V_f, p prime), so
frequent ids do not sit next to each other in the table. Dense features are uniform in [0, 1).
Step: StepConfig(l2 1e-5, CowClip r = 1 in the reference form, bound 1e-5), tables in `dense`
mode (every row moves each step) or `lazy` mode (only the batch's rows).
"""
import numpy as np

from dataio.schema import Batch

CRITEO_VOCAB = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
                27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572)
VOCABS = {"small": 337_630, "criteo": 33_762_577}
ZIPF_EXPONENT = 1.2
HASH_PRIME = 1_000_000_007          # > every V_f, so rank -> rank * p mod V_f is a bijection
NUM_DENSE, EMBED_DIM, HIDDEN = 13, 10, (400, 400, 400)
ALL_MODELS = ("lr", "fm", "wdl", "deepfm", "dcn", "dcnv2full", "dcnmix")
MODES = ("dense", "lazy")


def vocab_sizes(total: int) -> tuple:
    """(F,) field sizes summing to `total`: Criteo's, scaled by total / 33,762,577."""
    if total == sum(CRITEO_VOCAB):
        return CRITEO_VOCAB
    sizes = np.maximum(np.round(np.array(CRITEO_VOCAB) * total / sum(CRITEO_VOCAB)), 1).astype(np.int64)
    sizes[np.argmax(sizes)] += total - sizes.sum()   # put the rounding on the largest field
    return tuple(int(v) for v in sizes)


def make_model(name: str, total_vocab: int):
    from models import ModelConfig, Schema, build_model

    return build_model(name, Schema(vocab_sizes(total_vocab), NUM_DENSE),
                       ModelConfig(embed_dim=EMBED_DIM, dnn_hidden=HIDDEN))


def weight_params(model, seed: int = 0) -> dict:
    """model.init_params without the tables (every other parameter: the same shapes and values),
    from a twin with one row per field, so nothing of size V is drawn."""
    from models import Schema, build_model

    tiny = build_model(model.name, Schema((1,) * model.schema.num_fields, model.schema.num_dense),
                       model.config)
    return {k: v for k, v in tiny.init_params(seed).items() if k not in tiny.table_names()}


def make_params(model, seed: int = 0) -> dict:
    """model.init_params, but the [V, K] tables drawn in float32 straight away: at V = 33.8M the
    float64 draw of init_params would be 2.7 GB and would dominate the peak memory we report."""
    params = weight_params(model, seed)
    rng = np.random.default_rng(seed)
    V = model.schema.total_rows
    params["linear.table"] = np.zeros((V, 1), dtype=np.float32)
    if model.uses_embedding:
        table = rng.standard_normal((V, model.config.embed_dim), dtype=np.float32)
        table *= np.float32(model.config.init_stddev)
        params["embed.table"] = table
    return params


def make_batch(model, batch_size: int, seed: int) -> Batch:
    rng = np.random.default_rng([seed, 7])
    sizes = np.asarray(model.schema.vocab_sizes, dtype=np.int64)
    rank = rng.zipf(ZIPF_EXPONENT, (batch_size, sizes.size)) - 1           # (B, F), 0 = most frequent
    sparse = ((rank % sizes) * HASH_PRIME % sizes).astype(np.int32)        # (B, F)
    dense = rng.random((batch_size, model.schema.num_dense), dtype=np.float32)
    label = (rng.random(batch_size) < 0.25).astype(np.float32)
    return Batch(sparse, dense, label)


def step_config(mode: str):
    from engine.step import StepConfig

    return StepConfig(lr=8e-4, lr_embed=1e-4, l2=1e-5, clip=1.0, bound=1e-5, clip_form="reference",
                      embed_optim=mode)
