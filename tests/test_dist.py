"""Scale-out on MPI with real processes: `mpiexec -n 2` against one process, on a tiny synthetic set.

The runs go through engine.train's command line (tests/dist_driver.py builds the models in float64),
so reading, gradient exchange, sharded tables, checkpoints and evaluation are the real ones.
Skipped only where no mpiexec and mpi4py are installed (CI installs both: pip install -e ".[test,mpi]").
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"    # the mpich wheel installs it next to python
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def _have_mpi() -> bool:
    try:
        import importlib.util

        return _mpiexec() is not None and importlib.util.find_spec("mpi4py") is not None
    except ImportError:
        return False


pytestmark = pytest.mark.skipif(not _have_mpi(), reason="no mpiexec/mpi4py: pip install -e '.[mpi]'")

# one BLAS and one Numba thread per rank: 2 ranks on 2 cores
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
       "NUMBA_NUM_THREADS": "1"}


def launch(ranks: int, script: str, *args, timeout: int = 180) -> subprocess.CompletedProcess:
    """`mpiexec -n ranks python script args` (ranks 0: one plain process); script may be "-m"."""
    command = [sys.executable, script, *args]
    if ranks:
        command = [_mpiexec(), "-n", str(ranks)] + (["--allow-run-as-root"] if _is_open_mpi() else []) + command
    return subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)


def _is_open_mpi() -> bool:
    out = subprocess.run([_mpiexec(), "--version"], capture_output=True, text=True).stdout
    return "Open MPI" in out or "OpenRTE" in out


DRIVER = str(REPO / "tests" / "dist_driver.py")


def train(ranks: int, out: Path, data: str, *more) -> subprocess.CompletedProcess:
    args = ["--float64", "--model", "deepfm", "--data", data, "--bs", "512", "--epoch", "2", "--device", "cpu",
            "--lr_embed", "1e-2", "--dropout", "0.2", "--log-every", "1", "--seed", "5", "--out", str(out), *more]
    if ranks:
        args += ["--dist", "mpi"]
    result = launch(ranks, DRIVER, *args)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def arrays(run: Path) -> dict:
    with np.load(run / "checkpoint" / "arrays.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    from dataio.synthetic import generate

    return str(generate(tmp_path_factory.mktemp("data") / "tiny", rows=3000, seed=3, min_vocab=3, max_vocab=300))


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory) -> dict:
    """One process, 2 ranks replicated, 2 ranks with sharded tables: same data, seed, global batch 512."""
    root = tmp_path_factory.mktemp("runs")
    train(0, root / "one", data)
    train(2, root / "two", data, "--check-replicas-every", "1")
    train(2, root / "sharded", data, "--shard-tables", "--check-replicas-every", "1")
    return {name: root / name for name in ("one", "two", "sharded")}


def test_collectives_are_deterministic_and_in_rank_order():
    # 3 ranks: with 3 addends the order of addition changes the bits of about 1 element in 6
    result = launch(3, str(REPO / "tests" / "dist_checks.py"))
    assert result.returncode == 0, result.stdout + result.stderr
    for check in ("fixed_order_sum", "gathers", "host_staging", "replica_check"):
        # mpiexec forwards the ranks' lines as they come, and two may share a line: find, don't split
        assert sorted(re.findall(rf"ok {check} rank (\d)", result.stdout)) == ["0", "1", "2"], check


def test_two_ranks_end_where_one_process_ends(runs):
    # float64, dropout 0.2 (each rank draws its rows of the whole batch's masks), 12 steps of Adam:
    # the only difference is the order of additions (two half-batch means vs one mean)
    one, two = arrays(runs["one"]), arrays(runs["two"])
    assert one.keys() == two.keys() and any(k.startswith("m/") for k in one)
    for name in one:
        scale = max(1.0, float(np.abs(one[name]).max()))
        assert float(np.abs(one[name] - two[name]).max()) <= 1e-12 * scale, name
    final = json.loads((runs["two"] / "final_metrics.json").read_text())
    assert final["ranks"] == 2 and final["steps"] == 12


def test_sharded_tables_equal_replicated_bitwise_and_hold_half_the_rows(runs):
    replicated, sharded = arrays(runs["two"]), arrays(runs["sharded"])
    for name in replicated:
        assert np.array_equal(replicated[name], sharded[name]), name
    final = json.loads((runs["sharded"] / "final_metrics.json").read_text())
    V = replicated["param/embed.table"].shape[0]
    row_bytes = 3 * 8 * (replicated["param/embed.table"].shape[1] + 1)      # params, m, v of both tables
    assert final["table_bytes_per_rank"] == [((V - r + 1) // 2) * row_bytes for r in range(2)]
    whole = json.loads((runs["two"] / "final_metrics.json").read_text())["table_bytes_per_rank"]
    assert whole == [V * row_bytes] * 2


def test_evaluation_over_ranks_equals_one_process(runs):
    finals = {k: json.loads((v / "final_metrics.json").read_text()) for k, v in runs.items()}
    assert abs(finals["two"]["auc"] - finals["one"]["auc"]) <= 1e-12
    assert abs(finals["sharded"]["auc"] - finals["one"]["auc"]) <= 1e-12
    # the 2-rank run's own parameters, scored by one process (engine.evaluate): the same AUC
    from click.testing import CliRunner

    from engine import evaluate
    from models import ModelConfig

    original = evaluate.ModelConfig
    evaluate.ModelConfig = lambda **kw: ModelConfig(dtype="float64", **kw)
    try:
        result = CliRunner().invoke(evaluate.main, ["--run", str(runs["sharded"]), "--device", "cpu"])
    finally:
        evaluate.ModelConfig = original
    assert result.exit_code == 0, result.output
    scored = json.loads(result.output.strip().splitlines()[-1])
    assert scored["auc"] == pytest.approx(finals["sharded"]["auc"], abs=1e-12)
    assert scored["logloss"] == pytest.approx(finals["sharded"]["logloss"], rel=1e-12)


def test_resume_on_two_ranks_ends_bitwise_equal(runs, data, tmp_path):
    parts = tmp_path / "parts"
    train(2, parts, data, "--shard-tables", "--max-steps", "7")
    assert json.loads((parts / "checkpoint" / "state.json").read_text())["global_step"] == 7
    result = launch(2, DRIVER, "--float64", "--resume", "--dist", "mpi", "--out", str(parts),
                    "--max-steps", "0")   # lifts the saved stop: every epoch
    assert result.returncode == 0, result.stderr[-3000:]
    whole, resumed = arrays(runs["sharded"]), arrays(parts)
    for name in whole:
        assert np.array_equal(whole[name], resumed[name]), name
    # another number of ranks: a one-line refusal
    result = launch(0, DRIVER, "--float64", "--resume", "--out", str(parts))
    assert result.returncode != 0 and "trained on 2 ranks" in result.stderr and "Traceback" not in result.stderr


def test_differing_replicas_stop_the_run_naming_the_step(data, tmp_path):
    result = launch(2, DRIVER, "--perturb-rank", "1", "--model", "fm", "--data", data, "--bs", "512", "--device",
                    "cpu", "--max-steps", "3", "--check-replicas-every", "2", "--dist", "mpi",
                    "--out", str(tmp_path / "r"))
    assert result.returncode != 0
    assert "replicas differ after global step 2: rank(s) [1] do not match rank 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_dist_none_imports_no_mpi_and_shard_tables_needs_mpi(data, tmp_path):
    code = ("import sys; from engine import train; "
            f"train.main(['--data', {data!r}, '--out', {str(tmp_path / 'r')!r}, '--bs', '512', '--device', 'cpu', "
            "'--max-steps', '1'], standalone_mode=False); assert 'mpi4py' not in sys.modules, 'mpi4py imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    result = launch(0, DRIVER, "--data", data, "--out", str(tmp_path / "s"), "--shard-tables", "--device", "cpu")
    assert result.returncode != 0 and "--shard-tables needs --dist mpi" in result.stderr
    assert "Traceback" not in result.stderr


def test_cuda_backend_under_the_simulator_on_two_ranks(data, tmp_path):
    # the @cuda.jit kernels (Numba's CUDA simulator, NumPy arrays) in a sharded 2-rank step, held
    # against one CPU process; the simulator runs each GPU thread in Python, so one small step
    common = ["--float64", "--model", "fm", "--data", data, "--bs", "64", "--max-steps", "1", "--device", "cpu",
              "--lr_embed", "1e-2", "--seed", "5", "--embed-optim", "lazy"]
    sim = subprocess.run([_mpiexec(), "-n", "2", sys.executable, DRIVER, common[0], "--cudasim", *common[1:],
                          "--dist", "mpi", "--shard-tables", "--out", str(tmp_path / "sim")],
                         cwd=REPO, env={**ENV, "NUMBA_ENABLE_CUDASIM": "1"}, capture_output=True, text=True,
                         timeout=300)
    assert sim.returncode == 0, sim.stderr[-3000:]
    assert "device: cuda (Numba's CUDA simulator)" in sim.stdout
    cpu = launch(0, DRIVER, *common, "--out", str(tmp_path / "cpu"))
    assert cpu.returncode == 0, cpu.stderr[-3000:]
    on_gpu_path, on_cpu = arrays(tmp_path / "sim"), arrays(tmp_path / "cpu")
    for name in on_cpu:
        assert float(np.abs(on_gpu_path[name] - on_cpu[name]).max()) <= 1e-12 * max(1.0, np.abs(on_cpu[name]).max())


@pytest.mark.parametrize("shard", [False, True])
def test_bytes_counted_in_a_step_equal_the_projection_formulas(data, shard):
    from dataio.reader import BatchReader
    from dataio.meta import load_meta
    from engine.dist.bench import projected_bytes
    from models import ModelConfig, Schema, build_model

    result = launch(2, "-m", "engine.dist.bench", "--data", data, "--bs", "512", "--steps", "1",
                    *(["--shard-tables"] if shard else []))
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])["bytes_sent_per_step_per_rank"]
    model = build_model("deepfm", Schema.from_meta(load_meta(data)), ModelConfig())
    second_batch = list(BatchReader(data, "train", 512, seed=1235).iter_epoch(0))[1]   # the timed step
    projected = projected_bytes(model, second_batch.sparse, 2)
    for r in range(2):
        assert measured[r]["dense"] == projected[r]["dense"]
        if shard:
            assert measured[r]["sparse"] == projected[r]["sparse_sharded"]
            assert measured[r]["lookup"] == projected[r]["lookup_sharded"]
        else:
            assert measured[r]["sparse"] == projected[r]["sparse_replicated"]


def test_a_traceback_on_one_rank_stops_every_rank():
    code = ("from engine.dist import connect\n"
            "dist = connect('mpi')\n"
            "if dist.rank == 1:\n"
            "    raise AssertionError('boom on rank 1')\n"
            "dist.comm.barrier()   # rank 0 would wait here forever\n")
    result = launch(2, "-c", code, timeout=60)
    assert result.returncode != 0 and "boom on rank 1" in result.stderr


# ---- ranks that agree, or all stop -------------------------------------------------------------

def launch_each(per_rank: list, timeout: int = 120, cwds: list | None = None) -> subprocess.CompletedProcess:
    """One rank per argument list, as `mpiexec -n 1 python A : -n 1 python B` (each rank its own command,
    and with cwds its own working directory, as ranks on two nodes have)."""
    command = [_mpiexec()]
    for i, args in enumerate(per_rank):
        where = ["-wdir", str(cwds[i])] if cwds else []
        command += ([":"] if i else []) + ["-n", "1", *where, sys.executable, *args]
    return subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)


def short_run(data: str, out: Path, *more) -> list:
    return [DRIVER, "--model", "fm", "--data", data, "--bs", "512", "--device", "cpu", "--max-steps", "2",
            "--dist", "mpi", "--out", str(out), *more]


def assert_stopped_once(result, *phrases) -> None:
    assert result.returncode != 0, result.stdout[-1000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr[-3000:]          # the reason is printed once
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    assert "Traceback" not in result.stderr


def test_ranks_started_with_another_lr_stop_naming_the_option_and_the_rank(data, tmp_path):
    result = launch_each([short_run(data, tmp_path / "r"), short_run(data, tmp_path / "r", "--lr", "0.002")])
    assert_stopped_once(result, "--lr is 0.002 on rank 1")
    assert not (tmp_path / "r" / "checkpoint").exists()


def test_shard_tables_on_one_rank_only_stops_every_rank_instead_of_waiting(data, tmp_path):
    result = launch_each([short_run(data, tmp_path / "r"), short_run(data, tmp_path / "r", "--shard-tables")],
                         timeout=60)
    assert_stopped_once(result, "--shard_tables is True on rank 1")


def test_ranks_with_other_data_at_the_same_path_stop_and_a_copy_at_another_path_trains(data, tmp_path):
    from dataio.synthetic import generate

    # two "nodes": the same relative path --data data, a stale copy on the second
    nodes = [tmp_path / "node0", tmp_path / "node1"]
    shutil.copytree(data, nodes[0] / "data")
    generate(nodes[1] / "data", rows=3000, seed=4, min_vocab=3, max_vocab=300)
    result = launch_each([short_run("data", tmp_path / "r")] * 2, cwds=nodes)
    assert_stopped_once(result, "rank 1's dataset (data, meta.json sha256:", "is not rank 0's (data, ")
    copy = shutil.copytree(data, tmp_path / "copy")                 # a node-local copy: the same content
    result = launch_each([short_run(data, tmp_path / "s"), short_run(str(copy), tmp_path / "s")])
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_memory_error_on_one_rank_stops_every_rank(data, tmp_path):
    result = launch(2, DRIVER, "--memory-error-rank", "1", *short_run(data, tmp_path / "r")[1:], timeout=60)
    assert_stopped_once(result, "rank 1", "out of memory")


@pytest.mark.parametrize("signal_name, target", [("SIGINT", "mpiexec"), ("SIGTERM", "mpiexec"),
                                                  ("SIGTERM", "rank 1")])
def test_a_signal_stops_every_rank_within_seconds(data, tmp_path, signal_name, target):
    import signal
    import time

    out = tmp_path / "r"
    command = [_mpiexec(), "-n", "2", sys.executable, DRIVER, "--model", "fm", "--data", data, "--bs", "64",
               "--device", "cpu", "--epoch", "1000", "--log-every", "1", "--dist", "mpi", "--out", str(out)]
    job = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").stat().st_size):
            assert job.poll() is None and time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)
        pid = job.pid if target == "mpiexec" else rank_pids(job.pid)[1]
        os.kill(pid, getattr(signal, signal_name))
        sent = time.monotonic()
        _, stderr = job.communicate(timeout=30)                 # a rank left waiting would hang here
        waited = time.monotonic() - sent
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    errors = [line for line in stderr.splitlines() if line.startswith("Error")]
    assert errors == [f"Error (rank {1 if target == 'rank 1' else 0}): stopped by {signal_name}"], stderr[-2000:]
    print(f"{signal_name} to {target}: every rank stopped {waited:.1f} s later")


def rank_pids(launcher: int) -> list:
    """The ranks' process ids under an mpiexec, in rank order (MPI sets PMI_RANK in their environment)."""
    def parent(pid: int) -> int:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])

    def under_launcher(pid: int) -> bool:
        while pid > 1:
            pid = parent(pid)
            if pid == launcher:
                return True
        return False

    ranks = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and under_launcher(int(entry.name)):
                for item in (entry / "environ").read_bytes().split(b"\0"):
                    if item.startswith(b"PMI_RANK="):
                        ranks[int(item[len(b"PMI_RANK="):])] = int(entry.name)
        except (OSError, ValueError, IndexError):
            continue                                                  # a process that just ended
    return [ranks[r] for r in sorted(ranks)]


def test_profile_under_mpi_is_written_once_by_rank_0(data, tmp_path):
    # two "nodes": --out r is rank 0's directory; on rank 1's node no such directory exists, so a
    # rank other than 0 writing profile.txt would fail there
    nodes = [tmp_path / "node0", tmp_path / "node1"]
    for node in nodes:
        node.mkdir()
    args = [DRIVER, "--model", "fm", "--data", data, "--bs", "64", "--device", "cpu", "--max-steps", "101",
            "--profile", "--dist", "mpi", "--out", "r"]
    result = launch_each([args, args], cwds=nodes, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (nodes[0] / "r" / "profile.txt").read_text().startswith("steps 80-100")
    assert not (nodes[1] / "r").exists()
    assert result.stdout.count("[profile] steps 80-100") == 1
