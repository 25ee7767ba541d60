"""Every command-line tool refuses bad input with one line: each `python -m` entry point of the
repository (found here by looking for `if __name__ == "__main__":`, so a new tool cannot be missed)
is run against a table of bad options and damaged files. Each case must exit non-zero with one
`Error...` line on stderr (click's `Usage:`/`Try` lines aside) and no traceback."""
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "dataio", "validate", "models")
ENV = {**os.environ, "PYTHONPATH": str(REPO), "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def entry_points() -> list:
    """Every module of the packages that runs as `python -m`."""
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if re.search(r'^if __name__ == "__main__":', path.read_text(), re.M):
                found.append(".".join(path.relative_to(REPO).with_suffix("").parts))
    return found


# ---- the files the cases point at ---------------------------------------------------------------

def write_json(path: Path, value) -> Path:
    path.write_text(json.dumps(value))
    return path


def with_meta(data: Path, to: Path, change) -> str:
    d = shutil.copytree(data, to)
    meta = json.loads((d / "meta.json").read_text())
    change(meta)
    write_json(d / "meta.json", meta)
    return str(d)


def with_config(run: Path, to: Path, **changes) -> str:
    d = shutil.copytree(run, to)
    write_json(d / "config.json", {**json.loads((d / "config.json").read_text()), **changes})
    return str(d)


def with_state(run: Path, to: Path, **changes) -> str:
    d = shutil.copytree(run, to)
    state = d / "checkpoint" / "state.json"
    write_json(state, {**json.loads(state.read_text()), **changes})
    return str(d)


def with_metrics_line(run: Path, to: Path, line: str) -> str:
    d = shutil.copytree(run, to)
    with open(d / "metrics.jsonl", "a") as f:
        f.write(line + "\n")
    state = d / "checkpoint" / "state.json"          # a run cut off mid-way: --resume has work to do
    write_json(state, {**json.loads(state.read_text()), "epoch": 0, "step_in_epoch": 1, "global_step": 1})
    return str(d)


def with_huge_table_header(run: Path, to: Path) -> str:
    """The checkpoint's embedding table declares (3e9, 10) float32 (120 GB) over its few real bytes."""
    d = shutil.copytree(run, to)
    npz = d / "checkpoint" / "arrays.npz"
    with zipfile.ZipFile(npz) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (3_000_000_000, 10)})
    members["param/embed.table.npy"] = header.getvalue() + members["param/embed.table.npy"][128:]
    with zipfile.ZipFile(npz, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return str(d)


def results_without_key(tmp: Path) -> str:
    d = tmp / "scaling-out"
    d.mkdir()
    (d / "results.jsonl").write_text('{"rule": "none", "bs": 256, "seed": 1}\n')
    return str(d)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    from dataio.synthetic import generate

    tmp = tmp_path_factory.mktemp("bad")
    data = generate(tmp / "data", rows=600, seed=2, max_vocab=40)
    run = tmp / "run"
    trained = subprocess.run([sys.executable, "-m", "engine.train", "--data", str(data), "--bs", "64",
                              "--max-steps", "2", "--epoch", "1", "--device", "cpu", "--out", str(run)],
                             cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr[-2000:]
    a_file = tmp / "a-file.txt"
    a_file.write_text("not a directory\n")
    return {"tmp": tmp, "data": str(data), "run": run, "file": str(a_file)}


# module -> [(case, function of the files -> arguments)]
CASES = {
    "engine.train": [
        ("bs 0", lambda f: ["--bs", "0"]),
        ("lr nan", lambda f: ["--lr", "nan", "--data", f["data"]]),
        ("missing data", lambda f: ["--data", str(f["tmp"] / "nowhere"), "--out", str(f["tmp"] / "r1")]),
        ("meta sparse_features not a list", lambda f: [
            "--data", with_meta(Path(f["data"]), f["tmp"] / "m1", lambda m: m.update(sparse_features=5)),
            "--out", str(f["tmp"] / "r2"), "--device", "cpu"]),
        ("meta vocab_size a string", lambda f: [
            "--data", with_meta(Path(f["data"]), f["tmp"] / "m2",
                                lambda m: m["sparse_features"][0].update(vocab_size="ten")),
            "--out", str(f["tmp"] / "r3"), "--device", "cpu"]),
        ("meta rows a string", lambda f: [
            "--data", with_meta(Path(f["data"]), f["tmp"] / "m3", lambda m: m["splits"]["train"].update(rows="x")),
            "--out", str(f["tmp"] / "r4"), "--device", "cpu"]),
        ("meta splits a list", lambda f: [
            "--data", with_meta(Path(f["data"]), f["tmp"] / "m4", lambda m: m.update(splits=[1])),
            "--out", str(f["tmp"] / "r5"), "--device", "cpu"]),
        ("state.json global_step a string", lambda f: [
            "--resume", "--device", "cpu", "--out", with_state(f["run"], f["tmp"] / "s1", global_step="x")]),
        ("state.json a list", lambda f: [
            "--resume", "--device", "cpu", "--out", str(write_json(
                Path(shutil.copytree(f["run"], f["tmp"] / "s2")) / "checkpoint" / "state.json", [1]).parents[1])]),
        ("metrics.jsonl line null", lambda f: [
            "--resume", "--device", "cpu", "--out", with_metrics_line(f["run"], f["tmp"] / "l1", "null")]),
        ("metrics.jsonl step a string", lambda f: [
            "--resume", "--device", "cpu", "--out", with_metrics_line(f["run"], f["tmp"] / "l2", '{"step": "x"}')]),
    ],
    "engine.evaluate": [
        ("missing run", lambda f: ["--run", str(f["tmp"] / "nowhere")]),
        ("config embed_dim a string", lambda f: [
            "--device", "cpu", "--run", with_config(f["run"], f["tmp"] / "e1", embed_dim="10")]),
        ("config a list", lambda f: [
            "--device", "cpu", "--run", str(write_json(Path(shutil.copytree(f["run"], f["tmp"] / "e2")) / "config.json",
                                                        [1]).parent)]),
        ("checkpoint declaring (3e9, 10)", lambda f: [
            "--device", "cpu", "--run", with_huge_table_header(f["run"], f["tmp"] / "e3")]),
        ("state.json updates a string", lambda f: [
            "--device", "cpu", "--run", with_state(f["run"], f["tmp"] / "e4", updates="many")]),
    ],
    "engine.plot": [("unknown option", lambda f: ["--no-such-option"])],
    "engine.dist.bench": [
        ("bs 0", lambda f: ["--bs", "0"]),
        ("steps 0", lambda f: ["--steps", "0"]),
        ("embed-dim 0", lambda f: ["--embed-dim", "0"]),
        ("seed -1", lambda f: ["--seed", "-1"]),
        ("missing data", lambda f: ["--data", str(f["tmp"] / "nowhere")]),
    ],
    "dataio.preprocess": [
        ("missing input", lambda f: ["--dataset", "criteo", "--input", str(f["tmp"] / "x.tsv"), "--out",
                                     str(f["tmp"] / "p")]),
    ],
    "dataio.synthetic": [
        ("rows -5", lambda f: ["--out", str(f["tmp"] / "g1"), "--rows", "-5"]),
        ("raw-tsv over an existing file", lambda f: ["--out", str(f["tmp"] / "g2"), "--rows", "100",
                                                     "--raw-tsv", f["file"]]),
    ],
    "dataio.bench_preprocess": [
        ("rows -5", lambda f: ["--rows", "-5"]),
        ("rows abc", lambda f: ["--rows", "abc"]),
    ],
    "dataio.bench_reader": [
        ("batch-size 0", lambda f: ["--data", f["data"], "--batch-size", "0"]),
        ("epochs 0", lambda f: ["--data", f["data"], "--epochs", "0"]),
        ("split missing", lambda f: ["--data", f["data"], "--split", "valid"]),
    ],
    "validate.audit.explain": [("unknown option", lambda f: ["--no-such-option"])],
    "validate.audit.gradcheck": [("unknown option", lambda f: ["--no-such-option"])],
    "validate.device_check": [("steps 0", lambda f: ["--steps", "0"]), ("budget-s -1", lambda f: ["--budget-s", "-1"])],
    "validate.speed.roofline": [
        ("bs 0", lambda f: ["--bs", "0"]),
        ("vocab abc", lambda f: ["--vocab", "abc"]),
        ("unknown model", lambda f: ["--model", "nosuch"]),
        ("unique-fraction 0", lambda f: ["--unique-fraction", "0"]),
        ("unknown gpu", lambda f: ["--gpu", "T4"]),
        ("log missing", lambda f: ["--log", str(f["tmp"] / "nowhere.txt")]),
    ],
    "validate.speed.bench": [
        ("batch 0", lambda f: ["--batch", "0"]),
        ("steps 0", lambda f: ["--steps", "0"]),
        ("unknown model", lambda f: ["--models", "nosuch"]),
        ("unknown mode", lambda f: ["--modes", "dense,abc"]),
    ],
    "validate.study.scaling": [
        ("out an existing file", lambda f: ["--out", f["file"], "--data", f["data"]]),
        ("batch-sizes 64,abc", lambda f: ["--batch-sizes", "64,abc"]),
        ("batch-sizes 0", lambda f: ["--batch-sizes", "0"]),
        ("base-bs 0", lambda f: ["--base-bs", "0"]),
        ("seed -1", lambda f: ["--seed", "-1"]),
        ("rows -5", lambda f: ["--rows", "-5"]),
        ("epochs 0", lambda f: ["--epochs", "0"]),
        ("init-stddev abc", lambda f: ["--init-stddev", "1e-2,abc"]),
        ("unknown dataset", lambda f: ["--dataset", "movielens", "--data", f["data"]]),
        ("missing data", lambda f: ["--data", str(f["tmp"] / "nowhere"), "--out", str(f["tmp"] / "sc1")]),
        ("results.jsonl line without key", lambda f: ["--report-only", "--out", results_without_key(f["tmp"])]),
    ],
    "validate.study.seeds": [
        ("no results.jsonl", lambda f: [str(f["tmp"])]),
        ("tol -1", lambda f: ["--tol", "-1", str(f["tmp"])]),
    ],
}


def test_every_entry_point_has_bad_input_cases():
    assert set(entry_points()) == set(CASES), "an entry point without cases here, or a case for a module gone"


def refusal_problem(result: subprocess.CompletedProcess) -> str | None:
    """What is wrong with how a bad input was refused, or None."""
    if "Traceback" in result.stderr:
        return "a traceback: " + result.stderr.strip().splitlines()[-1]
    if result.returncode == 0:
        return "exit status 0"
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and not line.startswith(("Usage:", "Try ", "  "))]
    if len(lines) != 1 or not lines[0].startswith("Error"):
        return f"not one Error line on stderr: {lines[-4:]}"
    return None


def test_every_entry_point_refuses_bad_input_with_one_line(files):
    cases = [(module, name, build(files)) for module, table in CASES.items() for name, build in table]

    def run(case):
        module, name, args = case
        result = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=ENV, capture_output=True,
                                text=True, timeout=300)
        return module, name, refusal_problem(result)

    with ThreadPoolExecutor(2) as pool:
        problems = [f"{module} ({name}): {problem}" for module, name, problem in pool.map(run, cases) if problem]
    assert not problems, "\n".join(problems)


def test_scaling_epochs_0_records_nothing(files, tmp_path):
    result = subprocess.run([sys.executable, "-m", "validate.study.scaling", "--preset", "tiny", "--data",
                             files["data"], "--epochs", "0", "--out", str(tmp_path / "o")],
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and not (tmp_path / "o" / "results.jsonl").exists()
