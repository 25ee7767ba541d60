"""Benchmark: our preprocessing vs the reference pipeline (pandas + scikit-learn) on one raw Criteo TSV.

    python -m dataio.bench_preprocess --rows 2000000 [--workdir DIR] [--skip-reference]

Makes a synthetic raw Criteo TSV (dataio.synthetic --raw-tsv), then runs each pipeline in its own
child process and reports wall time, rows/s, MB/s and the child's peak memory. The reference child
does what data_utils.py does up to the split (read_csv, fillna + LabelEncoder x26, fillna +
MinMaxScaler, train_test_split + iloc) but does not write feather files, which only flatters it. Ours
writes the full dataset directory.

Peak memory is each child's own: VmHWM of /proc/self/status, read by the child as it ends. exec gives a
process a new address space whose high-water mark starts at zero, so the figure holds nothing of this
process (which may hold the generated input). os.wait4's ru_maxrss would not do: Linux carries the
pre-exec high-water mark into it, and Python starts children with vfork, so every child's ru_maxrss
was at least this process's peak (both sides read the same 296 MiB once).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

REFERENCE_CHILD = """
import sys, numpy as np
from sklearn.model_selection import train_test_split
from dataio.reference_pipeline import reference_encode
arrays = reference_encode("criteo", sys.argv[1])
n = len(arrays["label"])
train_index, test_index = train_test_split(np.arange(n), test_size=0.1, random_state=0)
train = {k: v[train_index] for k, v in arrays.items()}
test = {k: v[test_index] for k, v in arrays.items()}
"""
OURS_CHILD = """
import runpy, sys
sys.argv = ["dataio.preprocess"] + sys.argv[1:]
runpy.run_module("dataio.preprocess", run_name="__main__")
"""
# Wraps a child's code: whatever way it ends, it writes its own peak (VmHWM, bytes) to PEAK_FILE.
PEAK_WRAPPER = """
import os, sys
def _peak_bytes():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
try:
    exec(compile(os.environ["BENCH_CHILD_CODE"], "<bench child>", "exec"), {"__name__": "__bench_child__"})
finally:
    with open(os.environ["BENCH_PEAK_FILE"], "w") as f:
        f.write(str(_peak_bytes()))
"""
MEASURED = ("peak memory = VmHWM of each child's own address space from its exec on (/proc/self/status), "
            "nothing of the benchmark's process")


def run_child(code: str, args: list[str], workdir: Path) -> tuple[float, int]:
    """(wall seconds, peak memory bytes) of `code` run as `python -c code args...` in a child process,
    its peak measured by the child itself from a clean start (see the module docstring)."""
    peak_file = Path(workdir) / f"peak-{os.getpid()}-{time.monotonic_ns()}.txt"
    env = {**os.environ, "BENCH_CHILD_CODE": code, "BENCH_PEAK_FILE": str(peak_file)}
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, *args], cwd=Path(__file__).resolve().parents[1],
                            env=env)
    wall = time.perf_counter() - t0
    if result.returncode != 0:
        raise click.ClickException(f"the benchmark child ({args[:1]}...) failed with exit status {result.returncode}")
    peak = int(peak_file.read_text())
    peak_file.unlink()
    return wall, peak


def goal_text(value: float, goal: float, at_least: bool) -> str:
    met = value >= goal if at_least else value <= goal
    return f"goal {'>=' if at_least else '<='} {goal:g}: {'met' if met else 'NOT met'}"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--rows", default=2_000_000, show_default=True, type=click.IntRange(min=1))
@click.option("--workdir", default=None, type=click.Path(file_okay=False))
@click.option("--skip-reference", is_flag=True)
def main(rows: int, workdir: str | None, skip_reference: bool) -> None:
    """Time our preprocessing against the reference pipeline on a synthetic raw Criteo TSV."""
    work = Path(workdir or tempfile.mkdtemp(prefix="bench-preprocess-"))
    work.mkdir(parents=True, exist_ok=True)
    tsv = work / f"criteo-{rows}.tsv"
    if not tsv.exists():
        from dataio.synthetic import generate
        generate(work / "synthetic", rows=rows, seed=0, raw_tsv=tsv)
    size = tsv.stat().st_size
    subprocess.run(["cat", str(tsv)], stdout=subprocess.DEVNULL, check=True)  # into the page cache
    print(f"input {tsv}: {rows} rows, {size / 1e6:.1f} MB")
    print(MEASURED)
    results = {}
    results["ours"] = run_child(OURS_CHILD, ["--dataset", "criteo", "--input", str(tsv), "--out", str(work / "ours")],
                                work)
    if not skip_reference:
        results["reference"] = run_child(REFERENCE_CHILD, [str(tsv)], work)
    for name, (wall, peak) in results.items():
        print(f"{name:>9}: {wall:7.2f} s  {rows / wall:12,.0f} rows/s  {size / wall / 1e6:7.1f} MB/s  "
              f"peak memory {peak / 2**20:8.0f} MiB")
    if "reference" in results:
        (tw, tp), (rw, rp) = results["ours"], results["reference"]
        print(f"speed-up {rw / tw:.2f}x ({goal_text(rw / tw, 2, True)}), peak memory ratio ours/reference "
              f"{tp / rp:.3f} ({goal_text(tp / rp, 0.5, False)})")


if __name__ == "__main__":
    main()
