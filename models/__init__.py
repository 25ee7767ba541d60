"""The model zoo: build a CTR model by name from a data schema and hyperparameters."""
from models.base import EMBED_TABLE, LINEAR_TABLE, CTRModel, ModelConfig
from models.dcn import DCN, DCNMix, DCNv2
from models.deepfm import DeepFM
from models.fm import FM
from models.lr import LR
from dataio.schema import Schema
from models.wdl import WDL

# command-line name -> model. The reference's `DCNv2` is DeepCTR's DCNMix (low-rank mixture of
# experts, the model behind the paper's DCN-v2 numbers), so that spelling builds DCNMix here;
# full-rank DCN-v2 (class DCNv2) is `dcnv2full`.
MODELS = {cls.name: cls for cls in (LR, FM, WDL, DeepFM, DCN, DCNv2, DCNMix)}
# the reference's spellings (compared case-insensitively); its "WD" is Wide&Deep
ALIASES = {"wd": "wdl", "widedeep": "wdl", "wide&deep": "wdl", "dcnv2": "dcnmix"}


def canonical_model_name(name: str) -> str:
    key = name.lower()
    key = ALIASES.get(key, key)
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)} "
                         f"(case-insensitive; also {sorted(ALIASES)})")
    return key


def build_model(name: str, schema: Schema, config: ModelConfig = ModelConfig()) -> CTRModel:
    return MODELS[canonical_model_name(name)](schema, config)


def describe_model(name: str, params: dict) -> str:
    """One line: the model a name builds and its number of parameters (tables included)."""
    cls = MODELS[canonical_model_name(name)]
    count = sum(int(p.size) for p in params.values())
    spelled = f"{name} -> " if name.lower() != canonical_model_name(name) else ""
    return f"model: {spelled}{canonical_model_name(name)} ({cls.__name__}), {count:,} parameters"


__all__ = ["MODELS", "CTRModel", "ModelConfig", "Schema", "build_model", "canonical_model_name", "describe_model",
           "EMBED_TABLE", "LINEAR_TABLE"]
