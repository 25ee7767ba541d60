"""The model zoo: build a CTR model by name from a data schema and hyperparameters."""
from models.base import EMBED_TABLE, LINEAR_TABLE, CTRModel, ModelConfig
from models.dcn import DCN, DCNMix, DCNv2
from models.deepfm import DeepFM
from models.fm import FM
from models.lr import LR
from models.schema import Schema
from models.wdl import WDL

MODELS = {cls.name: cls for cls in (LR, FM, WDL, DeepFM, DCN, DCNv2, DCNMix)}
# the reference's spellings (compared case-insensitively); its "WD" is Wide&Deep
ALIASES = {"wd": "wdl", "widedeep": "wdl", "wide&deep": "wdl"}


def canonical_model_name(name: str) -> str:
    key = name.lower()
    key = ALIASES.get(key, key)
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)} "
                         f"(case-insensitive; also {sorted(ALIASES)})")
    return key


def build_model(name: str, schema: Schema, config: ModelConfig = ModelConfig()) -> CTRModel:
    return MODELS[canonical_model_name(name)](schema, config)


__all__ = ["MODELS", "CTRModel", "ModelConfig", "Schema", "build_model", "canonical_model_name",
           "EMBED_TABLE", "LINEAR_TABLE"]
