"""Benchmark: our preprocessing vs the reference pipeline (pandas + scikit-learn) on one raw Criteo TSV.

    python -m dataio.bench_preprocess --rows 2000000 [--workdir DIR] [--skip-reference]

Makes a synthetic raw Criteo TSV (dataio.synthetic --raw-tsv), then runs each pipeline in its own
child process and reports wall time, rows/s, MB/s and the child's peak RSS (from os.wait4's rusage,
which is per child). The reference child does what data_utils.py does up to the split
(read_csv, fillna + LabelEncoder x26, fillna + MinMaxScaler, train_test_split + iloc) but does not
write feather files, which only flatters it. Ours writes the full dataset directory.
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


def run_child(cmd: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1])
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd} failed with status {status}")
    return wall, usage.ru_maxrss * 1024  # Linux reports KiB


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--rows", default=2_000_000, show_default=True)
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
    results = {}
    results["ours"] = run_child([sys.executable, "-m", "dataio.preprocess", "--dataset", "criteo",
                                 "--input", str(tsv), "--out", str(work / "ours")])
    if not skip_reference:
        results["reference"] = run_child([sys.executable, "-c", REFERENCE_CHILD, str(tsv)])
    for name, (wall, rss) in results.items():
        print(f"{name:>9}: {wall:7.2f} s  {rows / wall:12,.0f} rows/s  {size / wall / 1e6:7.1f} MB/s  "
              f"peak RSS {rss / 2**20:8.0f} MiB")
    if "reference" in results:
        (tw, tr), (rw, rr) = results["ours"], results["reference"]
        print(f"speed-up {rw / tw:.2f}x (need >= 2), peak memory ratio ours/reference {tr / rr:.3f} (need <= 0.5)")


if __name__ == "__main__":
    main()
