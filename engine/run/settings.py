"""Settings read from a file (--config FILE, and RUN/config.json on --resume), checked by the very click
types and ranges of engine.train's command line, so a range is written once (engine/run/options.py) and a
file cannot train what the command line would refuse.

    read_settings(path, params)   config.json -> {RunConfig field: value}, every value of the JSON type
                                  its option takes and inside its option's range; an unknown key, a
                                  missing one, a wrong type or a value out of range is a SettingsError
                                  naming the file and the key

A value must already have its option's JSON type: 3 for an int, 0.5 or 1 for a float, "dense" for a
choice, true for a flag. The command line parses text; a file holds typed values, and "3" where a number
belongs is a mistake in the file, not something to guess at.
"""
import difflib
import json
from dataclasses import MISSING, fields
from pathlib import Path

import click

from engine.run.options import POSITIVE_INT

# RunConfig field -> the command-line option that sets it, where the names differ
OPTION_OF_FIELD = {"epochs": "epoch", "embed_dim": "sparse_embed_dim"}
HP_KEYS = ("lr", "lr_embed", "l2", "clip", "bound", "warmup")   # RunConfig.hp, each an option of its own
HP_BATCH = "bs"   # hp also records the batch the rule scaled to: RunConfig.bs
# what engine.train writes into config.json beside the settings (read by other tools, never a setting)
RECORDED = ("step_config", "schema", "device_line", "data_fingerprint", "vocab_digest")
# RunConfig fields with no option of their own, and their checks
OWN_TYPES = {"ranks": POSITIVE_INT}


class SettingsError(ValueError):
    """A settings file that cannot be used; the message names the file and the key."""


def command_params() -> dict:
    """option name -> click Parameter of engine.train's command (imported late: it imports this module)."""
    from engine.run.cli import main

    return {p.name: p for p in main.params}


def read_settings(path, params: dict | None = None, may_omit=frozenset(), complete: bool = True) -> dict:
    """config.json -> {RunConfig field: checked value}.

    complete: every field without a default must be there (a resumed run has nothing else to go by);
    may_omit: options the caller has from elsewhere (the flags given beside --config), so their keys
    may be absent; "hp" may then be absent when the scaling rule derives it."""
    from engine.run.config import RunConfig

    params = params or command_params()
    saved = load_object(path)
    known = {f.name: f for f in fields(RunConfig)}
    unknown = [key for key in saved if key not in known and key not in RECORDED]
    if unknown:
        raise SettingsError(f"{path}: unknown key {unknown[0]!r}{_did_you_mean(unknown[0], [*known, *params])}; "
                            f"a config.json holds the settings engine.train writes there")
    if complete:
        for name, field in known.items():
            required = field.default is MISSING and field.default_factory is MISSING
            if required and name not in saved and OPTION_OF_FIELD.get(name, name) not in may_omit:
                raise SettingsError(f"{path}: no {name!r}; a config.json names every setting of its run "
                                    f"(give --{OPTION_OF_FIELD.get(name, name).replace('_', '-')} on the command "
                                    f"line, or use a config.json that engine.train wrote)")
    settings = {}
    for name, value in saved.items():
        if name in RECORDED:
            continue
        if name == "hp":
            settings["hp"] = _hyperparameters(path, value, params, complete and "hp" not in may_omit)
        elif name in OWN_TYPES:
            settings[name] = _checked(path, name, value, OWN_TYPES[name], None)
        else:
            param = params[OPTION_OF_FIELD.get(name, name)]
            settings[name] = _checked(path, name, value, param.type, param)
    if HP_BATCH in settings.get("hp", {}) and "bs" in settings and settings["hp"][HP_BATCH] != settings["bs"]:
        raise SettingsError(f"{path}: 'hp.bs' is {settings['hp'][HP_BATCH]} and 'bs' is {settings['bs']}; the "
                            f"hyperparameters are those of the batch they were scaled to, so the two are equal")
    if "model" in settings:
        from models import canonical_model_name

        try:
            settings["model"] = canonical_model_name(settings["model"])
        except (KeyError, ValueError) as error:
            raise SettingsError(f"{path}: 'model': {str(error).strip(chr(39))}") from None
    return settings


def load_object(path) -> dict:
    """The JSON object in `path`, or a SettingsError that says what the file holds instead."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise SettingsError(f"{path}: not UTF-8 text (byte {error.start}); a config.json is JSON") from None
    except OSError as error:
        raise SettingsError(f"{path}: cannot be read ({error.strerror or error})") from None
    try:
        saved = json.loads(text)
    except json.JSONDecodeError as error:
        raise SettingsError(f"{path}: not JSON ({error.msg} at line {error.lineno} column {error.colno}); "
                            f"settings files are the JSON config.json that engine.train writes "
                            f"(not YAML or TOML)") from None
    if not isinstance(saved, dict):
        raise SettingsError(f"{path}: holds a JSON {_json_kind(saved)}; a config.json is one JSON object of "
                            f"settings ({{\"model\": ..., \"bs\": ...}})")
    return saved


def _hyperparameters(path, hp, params: dict, complete: bool) -> dict:
    if not isinstance(hp, dict):
        raise SettingsError(f"{path}: 'hp' is a JSON {_json_kind(hp)}; it must be an object of "
                            f"{', '.join(HP_KEYS)}")
    unknown = [key for key in hp if key not in (*HP_KEYS, HP_BATCH)]
    if unknown:
        raise SettingsError(f"{path}: unknown key 'hp.{unknown[0]}'{_did_you_mean(unknown[0], HP_KEYS)}; "
                            f"hp holds {', '.join(HP_KEYS)}")
    missing = [key for key in HP_KEYS if key not in hp]
    if complete and missing:
        raise SettingsError(f"{path}: no 'hp.{missing[0]}'; hp holds every one of {', '.join(HP_KEYS)}")
    return {key: _checked(path, f"hp.{key}", hp[key], params[key].type, params[key]) for key in hp}


def _checked(path, key: str, value, kind: click.ParamType, param):
    """value, of the JSON type `kind` takes, through `kind`'s own conversion and range check."""
    wanted = _json_type_of(kind, param)
    if not _is_json_type(value, wanted):
        raise SettingsError(f"{path}: {key!r} is {json.dumps(value)[:40]} (a JSON {_json_kind(value)}); "
                            f"it must be {_ARTICLE[wanted]}")
    try:
        return kind.convert(value, param, None)
    except click.BadParameter as error:
        raise SettingsError(f"{path}: {key!r}: {error.message}") from None


def _json_type_of(kind: click.ParamType, param) -> str:
    if param is not None and getattr(param, "is_flag", False):
        return "boolean"
    if isinstance(kind, click.types.IntParamType):
        return "integer"
    if isinstance(kind, click.types.FloatParamType):
        return "number"
    if isinstance(kind, click.types.BoolParamType):
        return "boolean"
    return "string"


_ARTICLE = {"integer": "an integer", "number": "a number", "boolean": "true or false", "string": "a string"}


def _is_json_type(value, wanted: str) -> bool:
    if isinstance(value, bool):
        return wanted == "boolean"
    if wanted == "integer":
        return isinstance(value, int)
    if wanted == "number":
        return isinstance(value, (int, float))
    if wanted == "string":
        return isinstance(value, str)
    return False


def _json_kind(value) -> str:
    for kind, types in (("null", type(None)), ("boolean", bool), ("integer", int), ("number", float),
                        ("string", str), ("list", list), ("object", dict)):
        if isinstance(value, types):
            return kind
    return type(value).__name__


def _did_you_mean(key: str, names) -> str:
    close = difflib.get_close_matches(key, list(names), n=1, cutoff=0.5)
    if not close and "_" in key:   # batch_size -> bs: the reference's spelling of a name we abbreviate
        close = [name for name in names if name == "".join(part[0] for part in key.split("_"))]
    return f" (did you mean {close[0]!r}?)" if close else ""
