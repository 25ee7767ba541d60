"""The floor of one training step on a named GPU, phase by phase, from what each phase must move and
compute, beside the launches and host syncs the code path makes.

    python -m validate.speed.roofline                                   # DeepFM, b = 131072, Criteo's V, dense, H200
    python -m validate.speed.roofline --model dcn --bs 1024 --vocab small --embed-optim lazy --gpu A100
    python -m validate.speed.roofline --log device_check.txt            # beside the last measured numbers

Symbols: B batch, F sparse fields, D dense features, K embedding dim, V table rows, U unique ids of
a batch (U = --unique-fraction * B * F, an assumption: Criteo's ids repeat heavily), P weights.

Bytes are the fewest each phase must read and write in HBM (each array once; float32 arrays,
int64 ids, float64 partial sums as the kernels make them); FLOPs are the GEMMs' (float32). A
phase's floor is max(bytes / bandwidth, FLOPs / rate), the step's floor their sum. The modelled
step adds, to the floor, LAUNCH_S per launch the GPU waits on and SYNC_S per host read-back.

Launches and syncs are counted, not typed in: `count_step` runs one train step (engine.step.train_step
and the loop's divergence check, engine.run.guards.divergence) of the same model at a tiny size under
Numba's CUDA simulator in a child process, with counting wrappers around every kernel module's
`launch` (the numba-cuda kernels) and around the host read-back sites of the loop: the id range
check (model.global_ids; skipped for the device reader's batches, `CheckedBatch`, whose ids were
checked when read, as the counted step's are), the unique ids' count (backend.index_ids) and the
divergence check. CuPy's own elementwise, sort and reduction launches are not counted (the simulator
runs them as NumPy), nor charged: the modelled step has numba-cuda's launches only.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import click

from models import MODELS

# bandwidth (bytes/s), float32 and float64 rates (FLOP/s, without tensor cores): the vendors' SXM sheets
GPUS = {
    "H200": (4.8e12, 67e12, 34e12),
    "A100": (2.039e12, 19.5e12, 9.7e12),
    "V100": (0.9e12, 15.7e12, 7.8e12),
}
LAUNCH_S = 5e-6          # a launch the GPU waits on (host-side cost of a small kernel)
SYNC_S = 20e-6           # a host read-back: the queue drains, then a copy
F32, I64, F64 = 4, 8, 8


@dataclass(frozen=True)
class Shape:
    B: int
    F: int
    D: int
    K: int
    V: int
    U: int
    layers: tuple             # (I, H) of every GEMM weight: DNN layers and the head
    P: int                    # weights (all parameters but the tables)
    fm: bool
    embed_optim: str


def model_shape(model_name: str, batch_size: int, vocab: int, embed_optim: str, unique_fraction: float) -> Shape:
    from validate.speed.problem import make_model, weight_params

    model = make_model(model_name, vocab)
    weights = weight_params(model)
    layers = tuple(w.shape for name, w in weights.items() if w.ndim == 2 and name.endswith(".W"))
    F, D, K = model.schema.num_fields, model.schema.num_dense, model.config.embed_dim
    U = min(model.schema.total_rows, max(1, int(unique_fraction * batch_size * F)))
    return Shape(batch_size, F, D, K, model.schema.total_rows, U, layers, sum(w.size for w in weights.values()),
                 model.name in ("fm", "deepfm"), embed_optim)


def phase_costs(s: Shape) -> dict:
    """{phase: (bytes, float32 FLOPs)} of one step (the phases of validate/speed/phases.py, and
    the divergence check)."""
    B, F, D, K, V, U, C = s.B, s.F, s.D, s.K, s.V, s.U, s.K + 1        # C: both tables' columns per id
    N = B * F
    gemm = sum(i * h for i, h in s.layers)
    acts = sum(h for _, h in s.layers)                                 # activations per row
    rows = V if s.embed_optim == "dense" else U
    costs = {
        # ids in, rows of both tables gathered and written, the deep input assembled
        "gather": (N * 4 + N * I64 + 2 * N * C * F32 + B * (F * K + D) * F32, 0.0),
        "fm": (2 * N * K * F32 + 4 * N * K * F32, 0.0) if s.fm else (0.0, 0.0),
        "dnn_fwd": ((B * (F * K + D) + 2 * B * acts + gemm) * F32, 2.0 * B * gemm),
        "dnn_bwd": ((3 * B * (F * K + D) + 4 * B * acts + 2 * gemm) * F32, 4.0 * B * gemm),
        # one sort of the N ids (4 radix passes over keys and values), then the fixed-order sums
        "scatter": (4 * 2 * N * (I64 + I64) + N * (I64 + C * F32) + U * C * (F64 + F32), 0.0),
        "cowclip": (U * (2 * K * F32 + K * F32 + I64 * 2 + F64), 0.0),
        "adam_weights": (s.P * (7 * F32 + F64), 0.0),      # w, m, v read and written, g and lambda read
        # table, m, v read and written; the position map read (dense) or the ids (lazy)
        "adam_tables": (rows * C * 6 * F32 + (2 * V * 4 if s.embed_optim == "dense" else U * I64), 0.0),
        # the Adam kernels' non-finite flag: their stores are re-read from the cache, not from HBM
        "guard": (4.0, 0.0),
    }
    return costs


def floor_seconds(costs: dict, gpu: str) -> dict:
    bandwidth, fp32, _ = GPUS[gpu]
    return {p: max(b / bandwidth, f / fp32) for p, (b, f) in costs.items()}


# --------------------------------------------------------------------------------------------
# the counts, from the code path under the simulator

COUNT_SCRIPT = r"""
import json, sys
from validate.speed.roofline import counted_step
print(json.dumps(counted_step(sys.argv[1], sys.argv[2])))
"""


def counted_step(model_name: str, embed_optim: str) -> dict:
    """One step of `model_name` at a tiny size on the cuda backend (run under NUMBA_ENABLE_CUDASIM=1),
    counting numba-cuda launches by kernel and the loop's host read-backs by site."""
    import importlib
    import pkgutil

    import engine.kernels
    from engine.backend import get_backend
    from engine.optim import AdamState
    from engine.run import guards
    from dataio.schema import CheckedBatch
    from engine.step import train_step
    from validate.speed.problem import make_batch, make_model, make_params, step_config

    launches, syncs = Counter(), Counter()

    def counting_launch(original):
        def launch(kernel, num_threads, *args, **kwargs):
            launches[kernel.py_func.__name__] += num_threads > 0
            return original(kernel, num_threads, *args, **kwargs)
        return launch

    patched = []
    for info in pkgutil.iter_modules(engine.kernels.__path__):
        module = importlib.import_module(f"engine.kernels.{info.name}")
        if hasattr(module, "launch") and info.name != "common":
            patched.append((module, module.launch))
            module.launch = counting_launch(module.launch)

    def counting(site, function):
        def counted(*args, **kwargs):
            syncs[site] += 1
            return function(*args, **kwargs)
        return counted

    try:
        kernels = get_backend("cuda")
        kernels = type(kernels)(**{**vars(kernels), "index_ids": counting("unique size", kernels.index_ids)})
        model = make_model(model_name, 300)
        check_ids = model.global_ids

        def global_ids(sparse, in_range=False):       # the check reads a flag back unless skipped
            if not in_range:
                syncs["id range check"] += 1
            return check_ids(sparse, in_range)

        model.global_ids = global_ids
        params = make_params(model)
        state = AdamState.zeros_like(params, kernels.xp)
        batch = CheckedBatch(*make_batch(model, 16, seed=0))   # as the device reader yields them
        info = train_step(model, params, state, batch, step_config(embed_optim), kernels)
        counting("divergence check", guards.divergence)(info["loss"], params, state, kernels)
    finally:
        for module, original in patched:
            module.launch = original
    return {"launches": dict(launches), "syncs": dict(syncs)}


def count_step(model_name: str, embed_optim: str) -> dict:
    """counted_step in a child process under the CUDA simulator (in this one if it runs the simulator)."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return counted_step(model_name, embed_optim)
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1",
               PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", COUNT_SCRIPT, model_name, embed_optim], cwd=root, env=env,
                         capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.splitlines()[-1])


# --------------------------------------------------------------------------------------------
# the table


def measured_from_log(path: Path) -> dict:
    """Lines `measured <phase|step> <ms>` of a device_check report -> {name: ms}."""
    found = {}
    for line in Path(path).read_text().splitlines():
        match = re.match(r"\s*measured\s+(\S+)\s+([0-9.]+)\s*ms", line)
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


def gpu_named(device_name: str) -> str:
    """The GPUS entry a device name (e.g. 'NVIDIA H200') is, else H200, the one the goals are set on."""
    return next((gpu for gpu in GPUS if gpu in device_name.upper()), "H200")


def roofline(model_name: str, batch_size: int, vocab: int, embed_optim: str, gpu: str,
             unique_fraction: float = 0.25, counts: dict | None = None) -> dict:
    """-> {"phases": {phase: (bytes, flops, floor s)}, "floor_s", "launches", "syncs", "modelled_s"}."""
    shape = model_shape(model_name, batch_size, vocab, embed_optim, unique_fraction)
    costs = phase_costs(shape)
    floors = floor_seconds(costs, gpu)
    counts = counts if counts is not None else count_step(model_name, embed_optim)
    launches = sum(counts["launches"].values())
    syncs = sum(counts["syncs"].values())
    floor = sum(floors.values())
    return {"phases": {p: (*costs[p], floors[p]) for p in costs}, "floor_s": floor, "launches": launches,
            "syncs": syncs, "counts": counts, "modelled_s": floor + launches * LAUNCH_S + syncs * SYNC_S}


def print_roofline(result: dict, title: str, measured: dict | None = None) -> None:
    measured = measured or {}
    print(title)
    print(f"{'phase':<14}{'MB':>10}{'GFLOP':>9}{'floor ms':>10}{'measured ms':>13}")
    for phase, (nbytes, flops, seconds) in result["phases"].items():
        got = measured.get(phase)
        print(f"{phase:<14}{nbytes / 1e6:>10.1f}{flops / 1e9:>9.1f}{seconds * 1e3:>10.3f}"
              f"{(f'{got:.3f}' if got is not None else 'owed'):>13}")
    print(f"{'floor':<14}{'':>19}{result['floor_s'] * 1e3:>10.3f}")
    print(f"numba-cuda launches {result['launches']} ({', '.join(f'{k} {v}' for k, v in sorted(result['counts']['launches'].items()))})")
    print(f"host syncs {result['syncs']} ({', '.join(f'{k} {v}' for k, v in sorted(result['counts']['syncs'].items()))})")
    step = measured.get("step")
    print(f"{'modelled step':<14}{'':>19}{result['modelled_s'] * 1e3:>10.3f}{(f'{step:.3f}' if step else 'owed'):>13}"
          f"   (floor + {LAUNCH_S * 1e6:.0f} us a launch + {SYNC_S * 1e6:.0f} us a sync)")
    print("  not in the model: CuPy's own launches (uncounted: the simulator runs them as NumPy) and GEMMs below peak")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "model_name", default="deepfm", show_default=True, type=click.Choice(sorted(MODELS)))
@click.option("--bs", default=131072, show_default=True, type=click.IntRange(min=1), help="batch size B")
@click.option("--vocab", default="criteo", show_default=True, help="small | criteo | a total row count V")
@click.option("--embed-optim", type=click.Choice(["dense", "lazy"]), default="dense", show_default=True)
@click.option("--gpu", type=click.Choice(sorted(GPUS)), default="H200", show_default=True)
@click.option("--unique-fraction", default=0.25, show_default=True,
              type=click.FloatRange(min=0, max=1, min_open=True), help="U / (B F), the batch's unique ids")
@click.option("--log", "log", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="a validate.device_check report: print its measured numbers beside the model")
def main(model_name, bs, vocab, embed_optim, gpu, unique_fraction, log):
    from validate.speed.problem import VOCABS

    try:
        V = VOCABS.get(vocab) or int(float(vocab))
    except ValueError:
        V = 0
    if V < 1:
        raise click.BadParameter(f"{vocab!r} is not small, criteo or a row count >= 1", param_hint="--vocab")
    result = roofline(model_name, bs, V, embed_optim, gpu, unique_fraction)
    print_roofline(result, f"roofline: {model_name}, B = {bs}, V = {V:,}, embed_optim {embed_optim}, {gpu} "
                           f"({GPUS[gpu][0] / 1e12:.2f} TB/s, {GPUS[gpu][1] / 1e12:.0f} TFLOP/s float32)",
                   measured_from_log(log) if log else None)


if __name__ == "__main__":
    main()
