"""meta.json of a dataset directory: the schema every shard is checked against.

A dataset directory is complete exactly when its meta.json exists: writers build the directory under a
temporary name, write meta.json last and then rename the directory into place (see writer.py), and
meta.json itself is written to a temp file and renamed. So a crash never leaves a directory that
load_meta accepts.

Keys: format_version, kind ("criteo" | "avazu" | "synthetic"), sparse_features [{name, vocab_size}],
dense_features [{name, transform}], splits {name: {rows, shards[, crc32]}} (train and test always,
valid when made; only "all" when preprocessed with --split none), source {path, bytes, sha256 | ...},
options {...}; synthetic sets also carry bayes {test_auc, test_logloss}. A shard is named by a bare file
name inside the directory; a name with a directory part, an absolute path, or one that resolves outside
the directory (a symlink) is refused, so a crafted meta.json cannot point the reader at other files.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from dataio import FORMAT_VERSION

META_NAME = "meta.json"
REQUIRED_KEYS = ("format_version", "kind", "sparse_features", "dense_features", "splits", "source", "options")
KINDS = ("criteo", "avazu", "synthetic")


class MetaError(ValueError):
    """meta.json is missing, stale or inconsistent; the message names the file and the fix."""


def write_meta(data_dir: str | os.PathLike, meta: dict) -> Path:
    """Write `meta` as data_dir/meta.json atomically (temp file + rename); returns the path."""
    path = Path(data_dir) / META_NAME
    meta = {"format_version": FORMAT_VERSION, **meta}
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_meta(data_dir: str | os.PathLike) -> dict:
    """Read and validate data_dir/meta.json; checks format version, keys and that every shard exists."""
    data_dir = Path(data_dir)
    path = data_dir / META_NAME
    fix = "re-run preprocessing (python -m dataio.preprocess ...) or dataio.synthetic to rebuild it"
    if not data_dir.is_dir():
        raise MetaError(f"{data_dir}: dataset directory does not exist; {fix}")
    if not path.is_file():
        raise MetaError(f"{path}: missing, so {data_dir} is not a finished dataset (a write may have been "
                        f"interrupted); {fix}")
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MetaError(f"{path}: not valid JSON ({e}); {fix}") from e
    if not isinstance(meta, dict):
        raise MetaError(f"{path}: top level must be a JSON object; {fix}")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise MetaError(f"{path}: missing key(s) {missing}; {fix}")
    if meta["format_version"] != FORMAT_VERSION:
        raise MetaError(f"{path}: format_version {meta['format_version']!r}, this code reads "
                        f"{FORMAT_VERSION}; {fix}")
    _check_types(path, meta, fix)
    if meta["kind"] not in KINDS:
        raise MetaError(f"{path}: kind {meta['kind']!r} not one of {KINDS}; {fix}")
    for feat in meta["sparse_features"]:
        if feat["vocab_size"] < 1:
            raise MetaError(f"{path}: bad sparse feature entry {feat!r}; {fix}")
    one_split = isinstance(meta["options"], dict) and meta["options"].get("split") == "none"
    for split in (("all",) if one_split else ("train", "test")):   # --split none: every row in "all"
        if split not in meta["splits"]:
            raise MetaError(f"{path}: splits lacks {split!r}; {fix}")
    for split, info in meta["splits"].items():
        if not {"rows", "shards"} <= set(info):
            raise MetaError(f"{path}: split {split!r} needs 'rows' and 'shards'; {fix}")
        crcs = info.get("crc32")
        if crcs is not None and (not isinstance(crcs, list) or len(crcs) != len(info["shards"])):
            raise MetaError(f"{path}: split {split!r} has {len(info['shards'])} shards but crc32 is not a "
                            f"list of as many entries; {fix}")
        for name in info["shards"]:
            _check_shard_name(path, data_dir, split, name, fix)
            if not (data_dir / name).is_file():
                raise MetaError(f"{path}: lists shard {name} of split {split!r}, but "
                                f"{data_dir / name} is missing; {fix}")
    if meta["kind"] == "synthetic" and "bayes" not in meta:
        raise MetaError(f"{path}: synthetic dataset without 'bayes' metrics; {fix}")
    return meta


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_types(path: Path, meta: dict, fix: str) -> None:
    """Every field the code reads has its type, named with the file and the key when it has not."""
    def need(ok: bool, where: str, what: str, value) -> None:
        if not ok:
            raise MetaError(f"{path}: {where} must be {what}, not {json.dumps(value)[:60]}; {fix}")

    need(isinstance(meta["kind"], str), "kind", "a string", meta["kind"])
    for key in ("sparse_features", "dense_features"):
        need(isinstance(meta[key], list), key, "a list", meta[key])
        for i, feat in enumerate(meta[key]):
            need(isinstance(feat, dict) and isinstance(feat.get("name"), str), f"{key}[{i}]",
                 'an object with a string "name"', feat)
    for i, feat in enumerate(meta["sparse_features"]):
        need(_is_int(feat.get("vocab_size")), f"sparse_features[{i}].vocab_size", "an integer",
             feat.get("vocab_size"))
    need(isinstance(meta["splits"], dict), "splits", "an object", meta["splits"])
    for split, info in meta["splits"].items():
        need(isinstance(info, dict), f"splits.{split}", "an object", info)
        if "rows" in info:
            need(_is_int(info["rows"]) and info["rows"] >= 0, f"splits.{split}.rows", "an integer >= 0",
                 info["rows"])
        if "shards" in info:
            need(isinstance(info["shards"], list), f"splits.{split}.shards", "a list of file names", info["shards"])
    for key in ("source", "options"):
        need(isinstance(meta[key], dict), key, "an object", meta[key])
    if "bayes" in meta:
        need(isinstance(meta["bayes"], dict), "bayes", "an object", meta["bayes"])


def _check_shard_name(path: Path, data_dir: Path, split: str, name, fix: str) -> None:
    """A shard must be a plain file name that stays inside data_dir (also after following links)."""
    ok = isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name \
        and not Path(name).is_absolute()
    if ok:
        where = (data_dir / name).resolve()
        ok = where.parent == data_dir.resolve()
    if not ok:
        raise MetaError(f"{path}: split {split!r} lists shard {name!r}, which is not a file inside "
                        f"{data_dir}; refusing to read outside the dataset directory; {fix}")


def shard_crcs(meta: dict, split: str) -> list:
    """Per shard of `split`: {array: CRC-32} recorded at writing, or None (datasets made before)."""
    info = meta["splits"][split]
    return info.get("crc32") or [None] * len(info["shards"])


def vocabulary_digest(data_dir: str | os.PathLike, meta: dict | None = None) -> str | None:
    """What the dataset's ids mean, as a digest: meta.json's vocab_digest (written by preprocessing),
    else one computed from its vocab file, else for a synthetic set the hash of the generator's
    settings (its ids are drawn from them). None when nothing records it."""
    meta = load_meta(data_dir) if meta is None else meta
    if isinstance(meta.get("vocab_digest"), str):
        return meta["vocab_digest"]
    vocab_file = meta.get("vocab_file")
    if isinstance(vocab_file, str) and (Path(data_dir) / vocab_file).is_file():
        from dataio.vocab import load_vocabs, vocab_digest

        names = [f["name"] for f in meta["sparse_features"]]
        try:
            return vocab_digest(names, load_vocabs(Path(data_dir) / vocab_file, names))
        except (OSError, ValueError, KeyError) as error:
            raise MetaError(f"{Path(data_dir) / vocab_file}: cannot read the vocabularies ({error})") from error
    planted = meta.get("planted")
    if meta.get("kind") == "synthetic" and isinstance(planted, dict) and planted.get("config_hash"):
        return f"synthetic:{planted['config_hash']}"
    return None


def vocab_sizes(meta: dict) -> list[int]:
    """Per-field vocabulary sizes, length F."""
    return [int(f["vocab_size"]) for f in meta["sparse_features"]]
