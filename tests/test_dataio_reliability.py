"""Hostile inputs to the data layer: each case is refused with a one-line error naming the file:line
or the option, loses nothing already written, and never runs silently wrong.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from dataio import preprocess as pp
from dataio import tokenize as tk
from dataio.criteo_format import CriteoTokenizer
from dataio.meta import MetaError, load_meta
from dataio.preprocess import PreprocessError, preprocess
from dataio.reader import BatchReader, read_split
from dataio.shards import ShardError, read_shard
from dataio.synthetic import generate

from dataio_samples import avazu_file, criteo_file, criteo_line  # noqa: E402 (tests/)

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(result) -> str:
    """The CLI's error: exit status 1 or 2, one 'Error:' line, no traceback."""
    assert result.exit_code in (1, 2), (result.exit_code, result.output)
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    lines = [ln for ln in result.output.splitlines() if ln.startswith("Error")]
    assert len(lines) == 1, result.output
    return lines[0]


# ---- preprocessing refuses what it cannot do safely ----------------------------------------

def test_out_that_is_not_a_dataset_is_refused_and_kept(tmp_path):
    src = criteo_file(tmp_path / "in.tsv")
    user = tmp_path / "mine"
    (user / "sub").mkdir(parents=True)
    (user / "notes.txt").write_text("keep me")
    with pytest.raises(PreprocessError, match=r"mine: exists and is not a dataset written by this tool.*notes.txt"):
        preprocess("criteo", src, user)
    assert (user / "notes.txt").read_text() == "keep me" and (user / "sub").is_dir()
    # a dataset written by this tool is replaced atomically; an empty directory is filled
    out = preprocess("criteo", src, tmp_path / "d")
    first = load_meta(out)["source"]["sha256"]
    criteo_file(src, n=50)
    preprocess("criteo", src, out)
    assert load_meta(out)["source"]["sha256"] != first
    (tmp_path / "empty").mkdir()
    preprocess("criteo", src, tmp_path / "empty")
    assert load_meta(tmp_path / "empty")["kind"] == "criteo"
    # a user's file inside a dataset makes it not ours any more
    (out / "my-notes.txt").write_text("x")
    with pytest.raises(PreprocessError, match="my-notes.txt"):
        preprocess("criteo", src, out)
    assert (out / "my-notes.txt").exists() and (out / "meta.json").exists()


def test_out_containing_the_input_is_refused(tmp_path):
    out = preprocess("criteo", criteo_file(tmp_path / "in.tsv"), tmp_path / "d")
    user = tmp_path / "work"
    user.mkdir()
    for folder in (out, user):                       # a dataset of ours, a user's folder
        inside = criteo_file(folder / "train.txt")
        with pytest.raises(PreprocessError, match="contains the input"):
            preprocess("criteo", inside, folder)
        assert inside.is_file()
    assert load_meta(out)["kind"] == "criteo"


def test_avazu_bytes_are_kept_apart_losslessly(tmp_path):
    src = avazu_file(tmp_path / "a.csv", site_ids={0: b"\xff\xfe", 1: b"\xfe\xff", 2: b"\xff\xfe", 3: b"caf\xc3\xa9"})
    out = preprocess("avazu", src, tmp_path / "d", split="rand")
    meta = load_meta(out)
    ids = np.zeros(30, dtype=np.int64)
    assign, _ = pp.assign_splits(30, "rand", 0, 0.2)
    f = pp.AVAZU_SPARSE.index("site_id")
    for code, name in enumerate(("train", "valid", "test")):
        if name in meta["splits"]:
            ids[assign == code] = read_split(out, name)["sparse"][:, f]
    assert ids[0] == ids[2] and ids[0] != ids[1] and len({ids[0], ids[1], ids[3]}) == 3
    vocab = pp.load_vocabs(out / "vocab.npz", ["site_id"])[0]
    assert {b"\xff\xfe", b"\xfe\xff", b"caf\xc3\xa9"} <= set(vocab.tolist())


EXACT = ["100000000000000000000000", "0.1", "123456.7", "-0.0", "9007199254740992e-3", "1e22", "1e-22",
         "1234567890123450000000000", "3.14159265358979", "007", ".5", "5.", "+42", "0e999"]
OUT_OF_RANGE = ["2.2250738585072014e-308", "1.7976931348623157e308", "1e39", "1e-23", "12345678901234567",
                "9007199254740993e-3"]


@pytest.mark.parametrize("text", EXACT)
def test_dense_values_parse_exactly_as_python(text):
    buf = np.frombuffer(text.encode(), dtype=np.uint8)
    status, value = tk._parse_decimal(buf, 0, len(buf))
    assert status == 0 and value == float(text) and np.signbit(value) == np.signbit(float(text))


@pytest.mark.parametrize("text", OUT_OF_RANGE)
def test_dense_values_outside_the_exact_range_are_refused_with_file_line(tmp_path, text):
    src = criteo_file(tmp_path / "in.tsv", lines={5: criteo_line(5, dense=text)})
    with pytest.raises(PreprocessError, match=r"in\.tsv:6: column I1: dense value outside the exactly parsed range"):
        preprocess("criteo", src, tmp_path / "d", dense_transform="none")
    assert not (tmp_path / "d").exists()


def test_random_decimals_equal_python_float():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        digits = "".join(rng.choice(list("0123456789"), size=int(rng.integers(1, 16))))
        point = int(rng.integers(0, len(digits) + 1))
        text = f"{digits[:point]}.{digits[point:]}e{int(rng.integers(-10, 10))}"
        buf = np.frombuffer(text.encode(), dtype=np.uint8)
        status, value = tk._parse_decimal(buf, 0, len(buf))
        if status == 0:
            assert value == float(text), text


CLI_CASES = {
    "shard-rows-0": (["--shard-rows", "0"], "--shard-rows"),
    "shard-rows-neg": (["--shard-rows", "-5"], "--shard-rows"),
    "seed-neg": (["--seed", "-1"], "--seed"),
    "avazu-preset": (["--dataset", "avazu", "--preset", "criteo_x4"], "--preset criteo_x4"),
    "avazu-seq": (["--dataset", "avazu", "--split", "seq"], "--split seq"),
    "out-dot": (["--out", "."], "current directory"),
    "valid-with-seq": (["--split", "seq", "--valid-fraction", "0.1"], "--valid-fraction"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_option_errors_are_one_line(tmp_path, case):
    src = avazu_file(tmp_path / "a.csv") if "avazu" in case else criteo_file(tmp_path / "in.tsv")
    args, needle = CLI_CASES[case]
    base = {"--dataset": "criteo", "--input": str(src), "--out": str(tmp_path / "d")}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    line = one_line_error(CliRunner().invoke(pp.main, [x for kv in base.items() for x in kv]))
    assert needle in line, line
    assert not (tmp_path / "d").exists()


def test_vocab_from_other_kind_and_read_only_out(tmp_path, monkeypatch):
    crit = preprocess("criteo", criteo_file(tmp_path / "in.tsv"), tmp_path / "c")
    with pytest.raises(PreprocessError, match="--vocab-from .*a criteo dataset, this is avazu"):
        preprocess("avazu", avazu_file(tmp_path / "a.csv"), tmp_path / "a", vocab_from=crit)
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    args = ["--dataset", "criteo", "--input", str(tmp_path / "in.tsv"), "--out", str(locked / "d")]
    try:
        if os.access(locked, os.W_OK):   # root: mode bits do not stop it, so play a read-only file system
            monkeypatch.setattr("dataio.outdir.writable", lambda path: False)
        assert "not a writable directory" in one_line_error(CliRunner().invoke(pp.main, args))
        monkeypatch.undo()
        # a write that fails anyway (EROFS, disk full) is one line too, and the old dataset stays
        def refuse(*a, **k):
            raise OSError(30, "Read-only file system", str(crit))
        monkeypatch.setattr(pp.DatasetWriter, "append", refuse)
        args[-1] = str(crit)
        assert "Read-only file system; nothing was published" in one_line_error(CliRunner().invoke(pp.main, args))
        assert load_meta(crit)["kind"] == "criteo"
    finally:
        os.chmod(locked, 0o700)


@pytest.mark.parametrize("first_line", ["label\tI1\tI2\n", "0,1,2,3\n"], ids=["header", "commas"])
def test_wrong_format_gets_a_format_hint(tmp_path, first_line):
    src = criteo_file(tmp_path / "in.tsv", lines={0: first_line})
    res = CliRunner().invoke(pp.main, ["--dataset", "criteo", "--input", str(src), "--out", str(tmp_path / "d")])
    line = one_line_error(res)
    assert "in.tsv:1:" in line and "40 tab-separated fields" in line and "header" in line, line


# ---- hostile input: bad lines, crafted files, kills ----------------------------------------

def test_avazu_long_value_is_a_bad_line_and_memory_follows_the_values(tmp_path):
    src = avazu_file(tmp_path / "a.csv", site_ids={7: b"x" * 20_000, 9: b"y" * 900})
    with pytest.raises(PreprocessError, match=r"a\.csv:9: column site_id: value longer than 1024 bytes"):
        preprocess("avazu", src, tmp_path / "d")
    out = preprocess("avazu", src, tmp_path / "d", on_error="skip")
    assert load_meta(out)["errors"]["skipped_lines"] == 1
    # a 900-byte value costs its own bytes once, not 900 bytes for every value of the column
    assert (out / "vocab.npz").stat().st_size < 30_000
    col = pp.AvazuTokenizer(src)(np.frombuffer(src.read_bytes().split(b"\n", 1)[1], np.uint8), 2, True, None)[2]
    assert col[3].dtype == object


def test_blank_lines_fail_at_the_first_and_skip_keeps_a_bounded_sample(tmp_path):
    src = tmp_path / "in.tsv"
    src.write_text("".join(criteo_line(i) for i in range(20)) + "\n" * 200_000 + criteo_line(21))
    with pytest.raises(PreprocessError, match=r"in\.tsv:21: column"):
        preprocess("criteo", src, tmp_path / "d")
    tok = CriteoTokenizer(src)
    buf = np.frombuffer(src.read_bytes(), np.uint8)
    from dataio.errors import ErrorLog
    log = ErrorLog(src, "skip")
    label, _, _ = tok(buf, 1, True, log)
    assert len(label) == 21 and log.count == 200_000 and len(log.first) == 10
    assert max(p.capacity for p in tok.parts) <= len(buf) // 40 + 1   # row buffers by bytes, not by lines
    out = preprocess("criteo", src, tmp_path / "d", on_error="skip")
    errors = load_meta(out)["errors"]
    assert errors["skipped_lines"] == 200_000 and [e["line"] for e in errors["first"]] == list(range(21, 31))


def test_input_replaced_between_passes_or_growing_is_refused(tmp_path, monkeypatch):
    src = criteo_file(tmp_path / "in.tsv", n=60)
    real_count = pp.count_pass

    def count_then_replace(*a, **k):
        out = real_count(*a, **k)
        replacement = tmp_path / "other.tsv"
        criteo_file(replacement, n=60, lines={3: criteo_line(99)})
        os.replace(replacement, src)
        return out
    monkeypatch.setattr(pp, "count_pass", count_then_replace)
    with pytest.raises(PreprocessError, match="input changed between pass 1 and pass 2.*inode"):
        preprocess("criteo", src, tmp_path / "d")
    monkeypatch.setattr(pp, "count_pass", real_count)
    real_encode = pp.encode_pass

    def grow_then_encode(*a, **k):
        with open(src, "a") as f:
            f.write(criteo_line(1))
        return real_encode(*a, **k)
    monkeypatch.setattr(pp, "encode_pass", grow_then_encode)
    with pytest.raises(PreprocessError, match="input grew while being read"):
        preprocess("criteo", src, tmp_path / "d")
    assert not (tmp_path / "d").exists() and not list(tmp_path.glob(".d.*"))


def test_out_symlinks(tmp_path):
    src = criteo_file(tmp_path / "in.tsv")
    real = preprocess("criteo", src, tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(real)
    out = preprocess("criteo", criteo_file(src, n=45), link)    # a link to our dataset: followed
    assert link.is_symlink() and out == real.resolve()
    assert sum(s["rows"] for s in load_meta(link)["splits"].values()) == 45
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tsv", "link", "real"]   # no .old/.tmp litter
    user = tmp_path / "user"
    user.mkdir()
    (user / "f").write_text("x")
    (tmp_path / "link2").symlink_to(user)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for bad in ("link2", "dangling"):
        res = CliRunner().invoke(pp.main, ["--dataset", "criteo", "--input", str(src), "--out", str(tmp_path / bad)])
        assert "symlink" in one_line_error(res)
    assert (user / "f").read_text() == "x" and (tmp_path / "link2").is_symlink()


@pytest.fixture
def small(tmp_path):
    return generate(tmp_path / "s", rows=2_000, max_vocab=100, shard_rows=1_000)


def _rewrite_dense(path: Path, make):
    """Replace the dense dataset of a shard by what make(f, shape, dtype) creates."""
    with h5py.File(path, "a") as f:
        shape, dtype = f["dense"].shape, f["dense"].dtype
        del f["dense"]
        make(f, shape, dtype)


def test_crafted_shards_and_meta_are_refused(tmp_path, small):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x00" * 10_000_000)
    shard = small / "train-00000.h5"
    backup = shard.read_bytes()
    crafted = {
        "external raw storage": lambda f, shape, dtype: f.create_dataset("dense", shape, dtype,
                                                                         external=[(str(secret), 0, h5py.h5f.UNLIMITED)]),
        "virtual dataset": lambda f, shape, dtype: f.create_virtual_dataset(
            "dense", _layout(secret, shape, dtype, tmp_path)),
        "ExternalLink": lambda f, shape, dtype: f.__setitem__("dense", h5py.ExternalLink(str(tmp_path / "x.h5"), "/d")),
    }
    for what, make in crafted.items():
        shard.write_bytes(backup)
        _rewrite_dense(shard, make)
        with pytest.raises(ShardError, match=f"train-00000.h5.*({what}|external|virtual)"):
            read_shard(shard)
        with pytest.raises(ShardError):
            read_split(small, "train")
    shard.write_bytes(backup)
    meta = json.loads((small / "meta.json").read_text())
    for name in (str(shard.resolve()), "../s/train-00000.h5", "sub/train-00000.h5"):
        bad = json.loads(json.dumps(meta))
        bad["splits"]["train"]["shards"][0] = name
        (small / "meta.json").write_text(json.dumps(bad))
        with pytest.raises(MetaError, match="not a file inside"):
            load_meta(small)
    (small / "meta.json").write_text(json.dumps(meta))
    load_meta(small)


def _layout(secret, shape, dtype, tmp_path):
    src = tmp_path / "x.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("d", shape, dtype)
    layout = h5py.VirtualLayout(shape, dtype)
    layout[...] = h5py.VirtualSource(str(src), "d", shape=shape)
    return layout


def test_a_flipped_bit_fails_its_checksum(small):
    meta = load_meta(small)
    assert set(meta["splits"]["test"]["crc32"][0]) == {"sparse", "dense", "label", "prob"}
    shard = small / "train-00001.h5"
    with h5py.File(shard, "r") as f:
        offset = f["dense"].id.get_offset()
    data = bytearray(shard.read_bytes())
    data[offset + 17] ^= 0x04
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="train-00001.h5: dense fails its checksum"):
        read_split(small, "train")
    reader = BatchReader(small, "train", 100, prefetch=0)
    with pytest.raises(ShardError, match="checksum"):
        next(iter(reader.iter_epoch(0)))


SLOW_PREPROCESS = """
import sys, time
import dataio.preprocess as pp
real = pp.encode_pass
def slow(*a, **k):
    print("pass 2", flush=True)
    time.sleep(60)
pp.encode_pass = slow
sys.argv = ["preprocess"] + sys.argv[1:]
pp.main()
"""


def test_sigterm_leaves_no_temp_dir_and_stale_ones_go(tmp_path):
    src = criteo_file(tmp_path / "in.tsv")
    proc = subprocess.Popen([sys.executable, "-c", SLOW_PREPROCESS, "--dataset", "criteo", "--input", str(src),
                             "--out", str(tmp_path / "d")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "pass 2"
    assert list(tmp_path.glob(".d.tmp-*"))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert not list(tmp_path.glob(".d.*"))
    # a temp dir left by a process that no longer runs (kill -9) is removed by the next writer
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".d.tmp-{int(dead.stdout)}"
    (stale / "x").mkdir(parents=True)
    live = tmp_path / f".d.tmp-{os.getppid()}"
    live.mkdir()
    preprocess("criteo", src, tmp_path / "d")
    assert not stale.exists() and live.exists()


def test_vocab_from_a_log_dataset_inherits_its_transform(tmp_path):
    src = criteo_file(tmp_path / "in.tsv")
    logd = preprocess("criteo", src, tmp_path / "log", dense_transform="log")
    out = preprocess("criteo", src, tmp_path / "new", vocab_from=logd)
    assert load_meta(out)["dense_features"][0]["transform"]["type"] == "log"
    assert np.array_equal(read_split(out, "train")["dense"], read_split(logd, "train")["dense"])
    with pytest.raises(PreprocessError, match="--dense-transform minmax: --vocab-from .* was made with log"):
        preprocess("criteo", src, tmp_path / "new2", vocab_from=logd, dense_transform="minmax")


@pytest.mark.parametrize("args,needle", [(["--test-fraction", "1.5"], "--test-fraction"),
                                         (["--test-fraction", "0"], "--test-fraction"),
                                         (["--rows", "2", "--test-fraction", "0.9"], "no training rows"),
                                         (["--rows", "0"], "--rows")],
                         ids=["test-1.5", "test-0", "no-train-rows", "rows-0"])
def test_synthetic_option_errors_are_one_line(tmp_path, args, needle):
    from dataio.synthetic import main
    line = one_line_error(CliRunner().invoke(main, ["--out", str(tmp_path / "d")] + args))
    assert needle in line, line
    assert not (tmp_path / "d").exists()


def test_synthetic_out_that_is_not_a_dataset_is_refused(tmp_path):
    from dataio.synthetic import main
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    line = one_line_error(CliRunner().invoke(main, ["--out", str(user), "--rows", "100"]))
    assert "not a dataset written by this tool" in line and (user / "notes.txt").read_text() == "keep me"
    line = one_line_error(CliRunner().invoke(main, ["--out", str(tmp_path / "d"), "--rows", "100",
                                                    "--raw-tsv", str(tmp_path / "d" / "raw.tsv")]))
    assert "contains the --raw-tsv file" in line
