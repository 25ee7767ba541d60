"""Fuzz the Criteo parser with malformed lines: every bad line is reported, none is ever encoded."""
import re
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from dataio.meta import load_meta
from dataio.preprocess import PreprocessError, preprocess
from dataio.reader import read_split

hex8 = st.integers(0, 2**32 - 1).map(lambda v: f"{v:08x}")
dense_value = st.one_of(st.just(""), st.integers(-5, 10**6).map(str),
                        st.floats(0, 1e6, allow_nan=False).map(lambda x: f"{x:.1f}"))
good_line = st.tuples(st.sampled_from(["0", "1"]), st.lists(dense_value, min_size=13, max_size=13),
                      st.lists(st.one_of(st.just(""), hex8), min_size=26, max_size=26)
                      ).map(lambda t: [t[0], *t[1], *t[2]])
junk = st.sampled_from(["x", "1.2.3", "nan", "--1", "1e", " 3", "0x10", "١"])


@st.composite
def bad_line(draw):
    fields = draw(good_line)
    kind = draw(st.sampled_from(["drop", "extra", "label", "dense", "sparse"]))
    if kind == "drop":
        del fields[draw(st.integers(0, 39))]
    elif kind == "extra":
        fields.insert(draw(st.integers(0, 40)), draw(st.sampled_from(["", "1", "abcdef01"])))
    elif kind == "label":
        fields[0] = draw(st.sampled_from(["", "2", "-1", "0.0", "yes", "01"]))
    elif kind == "dense":
        fields[draw(st.integers(1, 13))] = draw(junk)
    else:
        fields[draw(st.integers(14, 39))] = draw(st.sampled_from(
            ["abc", "ABCDEF01", "0123456g", "012345678", "-1", "0000 000"]))
    return fields


TMP = Path(tempfile.mkdtemp(prefix="dataio-fuzz-"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(good_line.map(lambda f: (True, f)), bad_line().map(lambda f: (False, f))),
                min_size=1, max_size=25),
       st.booleans())
def test_bad_lines_are_reported_never_encoded(rows, cut_last_newline):
    text = [("\t".join(f) + "\n") for _, f in rows]
    good = [ok for ok, _ in rows]
    if cut_last_newline:           # the last line loses its newline: it is truncated, hence bad
        text[-1] = text[-1][:-1]
        good[-1] = False
    src = TMP / "in.tsv"
    src.write_text("".join(text))
    bad_lines = [i + 1 for i, ok in enumerate(good) if not ok]

    # fail mode: raises at the first bad line, naming file and line
    if bad_lines:
        try:
            preprocess("criteo", src, TMP / "fail", split="seq")
            raise AssertionError("a bad line was accepted")
        except PreprocessError as e:
            assert re.search(rf"in\.tsv:{bad_lines[0]}: column \w+: ", str(e)), str(e)
    # skip mode: counts exactly the bad lines; the output equals that of the good lines alone
    if not any(good):
        try:
            preprocess("criteo", src, TMP / "skip", split="seq", on_error="skip")
            raise AssertionError("no good rows, yet a dataset was written")
        except PreprocessError as e:
            assert "no valid rows" in str(e)
        return
    out = preprocess("criteo", src, TMP / "skip", split="seq", on_error="skip")
    errors = load_meta(out)["errors"]
    assert errors["skipped_lines"] == len(bad_lines)
    assert [e["line"] for e in errors["first"]] == bad_lines[:10]
    clean = TMP / "clean.tsv"
    clean.write_text("".join(t if t.endswith("\n") else t + "\n" for t, ok in zip(text, good) if ok))
    ref = preprocess("criteo", clean, TMP / "clean", split="seq")
    for split in ("train", "test"):
        a, b = read_split(out, split), read_split(ref, split)
        for k in a:
            assert np.array_equal(a[k], b[k]), (split, k)
