"""Benchmark of the CPU training step at Criteo scale, with a per-phase breakdown and a PyTorch twin.

    python -m validate.speed.bench                              # DeepFM, both vocabularies, both table modes
    python -m validate.speed.bench --models all --steps 3 --warmup 1
    python -m validate.speed.bench --vocab small --vs torch --parity
    python -m validate.speed.bench --vocab small --curve        # samples/s against batch size 1K..128K
    python -m validate.speed.bench --ab                          # each optimised piece against its plain form

Symbols: B batch, F = 26 sparse fields, D = 13 dense features, K = 10 embedding dim, V table rows,
H = 400 hidden width, U unique ids in a batch.

The problem (schema, params, batches, step) is validate/speed/problem.py; the PyTorch twin and the
parity check are validate/speed/torch_twin.py; the phase timers validate/speed/phases.py; --ab validate/speed/ab.py.

What is printed (medians over --steps steps after --warmup steps; nothing asserts on time):
  * the whole step (engine.step.train_step), and each phase, timed by wrapping the real layer and
    kernel functions while train_step runs (validate/speed/phases.py);
  * DNN GEMM GFLOP/s, against a float32 GEMM peak measured here with np.matmul, and the floor
    step >= DNN fwd+bwd FLOPs / peak;
  * peak resident memory of each configuration: every configuration runs in a child process of
    its own and reports its ru_maxrss;
  * with --vs torch, the same step in a lean PyTorch model, same init, same batches, and the
    ratio of our time to torch's; with --parity, the first step's loss and gradients of both,
    compared.

Timings are wall clock on whatever else the machine runs: run it on an idle machine.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import resource
import statistics
import tempfile
import time

import click
import numba
import numpy as np

from validate.speed.ab import ab_compare
from validate.speed.phases import PHASES, phase_step
from validate.speed.problem import (ALL_MODELS, EMBED_DIM, HIDDEN, VOCABS, ZIPF_EXPONENT, make_batch, make_model,
                              make_params, step_config, weight_params)
from validate.speed.torch_twin import TORCH_MODELS, parity, torch_twin, torch_unavailable_reason

GOAL_TORCH_RATIO, GOAL_FLOOR_RATIO = 0.5, 1.3


# --------------------------------------------------------------------------------------------
# FLOPs and the GEMM peak


def dnn_flops(model, batch_size: int) -> float:
    """FLOPs of the GEMMs of the DNN tower and the output Dense in one step: 2*B*I*H forward per
    (I, H) kernel (dnn.i.W, head.W), backward twice that (dx and dW). Cross layers are not counted."""
    kernels = [w.shape for name, w in weight_params(model).items()
               if name == "head.W" or (name.startswith("dnn.") and name.endswith(".W"))]
    return 6.0 * batch_size * sum(i * h for i, h in kernels)


def gemm_peak_gflops(n: int = 3072, repeats: int = 4) -> float:
    """float32 GEMM GFLOP/s of np.matmul on (n, n) matrices, best of `repeats`."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


# --------------------------------------------------------------------------------------------
# one configuration, in a child process of its own (so ru_maxrss is its own peak)


def _median(xs):
    return statistics.median(xs) if xs else float("nan")


def run_config(spec: dict) -> dict:
    """spec: engine ('ours' | 'torch'), model, vocab, mode, batch, steps, warmup, breakdown,
    batches (list of batch sizes for the curve, else None). -> timings and ru_maxrss (bytes)."""
    from engine.backend import get_backend
    from engine.optim import AdamState

    model = make_model(spec["model"], spec["vocab"])
    params = make_params(model)
    batch_sizes = spec.get("batches") or [spec["batch"]]
    out = {"spec": spec, "step_s": {}, "phases": {}}
    if spec["engine"] == "torch":
        import torch

        torch.manual_seed(0)
        _, step, _ = torch_twin(model, params, spec["mode"], share_memory=True)
    else:
        kernels = get_backend("cpu")
        state = AdamState.zeros_like(params, np)
        config = step_config(spec["mode"])
        from engine.step import train_step

        step = lambda b: train_step(model, params, state, b, config, kernels)["loss"]   # noqa: E731
    for B in batch_sizes:
        batches = [make_batch(model, B, seed) for seed in range(2)]
        times = []
        for i in range(spec["warmup"] + spec["steps"]):
            t0 = time.perf_counter()
            loss = step(batches[i % 2])
            if i >= spec["warmup"]:
                times.append(time.perf_counter() - t0)
        out["step_s"][B] = _median(times)
        out["loss"] = float(loss)
    if spec["engine"] == "ours" and spec.get("breakdown"):
        B = batch_sizes[-1]
        batches = [make_batch(model, B, seed) for seed in range(2)]
        per_phase = {p: [] for p in PHASES}
        totals = []
        for i in range(max(1, spec["steps"])):
            t0 = time.perf_counter()
            _, seconds, _ = phase_step(model, params, state, batches[i % 2], config, kernels)
            totals.append(time.perf_counter() - t0)
            for p in PHASES:
                per_phase[p].append(seconds.get(p, 0.0))
        out["phases"] = {p: _median(v) for p, v in per_phase.items()}
        out["phase_step_s"] = _median(totals)
    out["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # KiB on Linux
    return out


def _child_main(spec, queue):
    from engine.run.runtime import configure_process

    # both engines get the same settings, as under engine.train (--malloc default: glibc's own)
    configure_process(retain_memory=spec.get("malloc", "retain") == "retain")
    try:
        queue.put(run_config(spec))
    except BaseException as error:  # reported by the parent
        queue.put({"error": f"{type(error).__name__}: {error}"})


def run_in_child(spec: dict) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_main, args=(spec, queue))
    child.start()
    result = queue.get()
    child.join()
    if "error" in result:
        raise RuntimeError(f"{spec}: {result['error']}")
    return result


def data_seconds_per_batch(batch_size: int, batches: int = 4) -> float:
    """Median time for BatchReader (in-memory, shuffled, no prefetch thread) to assemble one
    batch of a synthetic dataset of 4 batches' rows, written to a temporary folder."""
    from dataio.reader import BatchReader
    from dataio.synthetic import generate

    with tempfile.TemporaryDirectory() as tmp:
        path = generate(os.path.join(tmp, "data"), rows=int(batch_size * batches / 0.9) + 1, seed=0)
        reader = BatchReader(path, "train", batch_size, shuffle=True, seed=0, prefetch=0, drop_last=True)
        for _ in reader.iter_epoch(0):                    # loads the shards
            pass
        times = []
        for epoch in (1, 2):
            it = iter(reader.iter_epoch(epoch))
            while True:
                t0 = time.perf_counter()
                if next(it, None) is None:
                    break
                times.append(time.perf_counter() - t0)
    return _median(times)


# --------------------------------------------------------------------------------------------
# the command


def _fmt_bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--models", "models_opt", default="deepfm", show_default=True,
              help="comma-separated model names, or 'all'")
@click.option("--vocab", type=click.Choice(["small", "criteo", "both"]), default="both", show_default=True)
@click.option("--modes", default="dense,lazy", show_default=True, help="table optimizer modes")
@click.option("--batch", default=131072, show_default=True)
@click.option("--steps", default=5, show_default=True, help="timed steps per configuration (median)")
@click.option("--warmup", default=2, show_default=True, help="untimed steps first (Numba compiles)")
@click.option("--vs", "versus", type=click.Choice(["none", "torch"]), default="none", show_default=True)
@click.option("--parity", "check_parity", is_flag=True, help="compare the first step with torch's")
@click.option("--curve", is_flag=True, help="samples/s against batch size 1K..--batch (DeepFM)")
@click.option("--no-breakdown", is_flag=True, help="skip the per-phase breakdown")
@click.option("--no-data", is_flag=True, help="skip timing the reader")
@click.option("--ab", is_flag=True, help="time each optimised piece against its plain form, then stop")
@click.option("--malloc", type=click.Choice(["retain", "default"]), default="retain", show_default=True,
              help="glibc malloc in each timed child: keep freed memory (engine/run/memory.py, as engine.train "
                   "does) or leave glibc's defaults; torch's child gets the same")
def main(models_opt, vocab, modes, batch, steps, warmup, versus, check_parity, curve, no_breakdown, no_data, ab,
         malloc):
    models = ALL_MODELS if models_opt == "all" else tuple(m.strip().lower() for m in models_opt.split(","))
    vocabs = ("small", "criteo") if vocab == "both" else (vocab,)
    modes = tuple(m.strip() for m in modes.split(","))
    use_torch = versus == "torch" or check_parity
    if use_torch and (reason := torch_unavailable_reason()):
        print(f"torch: {reason}; running without the torch comparison")
        use_torch, check_parity = False, False
    print(f"machine: {os.cpu_count()} CPUs, numpy {np.__version__}, numba {numba.__version__} "
          f"({numba.config.NUMBA_NUM_THREADS} threads, {numba.config.THREADING_LAYER} layer in the timed children)" + (f", torch {__import__('torch').__version__} "
                                                         f"({__import__('torch').get_num_threads()} threads)"
                                                         if use_torch else ""))
    print(f"batch {batch}, steps {steps} (median) after {warmup} warm-up; Zipf({ZIPF_EXPONENT}) ids, "
          f"K={EMBED_DIM}, DNN {'-'.join(map(str, HIDDEN))}, CowClip r=1 reference form, l2 1e-5; "
          f"malloc {malloc}")
    peak = gemm_peak_gflops()
    print(f"float32 GEMM peak (np.matmul 3072^2, best of 4): {peak:.1f} GFLOP/s")

    if ab:
        for v in vocabs:
            print(f"\nbefore / after, deepfm V={VOCABS[v]:,}, batch {batch}, median of {steps} alternations:")
            for name, plain, fast, difference in ab_compare(batch, VOCABS[v], steps):
                print(f"  {name:48s} plain {plain * 1e3:8.1f} ms  now {fast * 1e3:8.1f} ms  "
                      f"speed-up {plain / fast:5.2f}x  rel diff {difference:8.1e}")
        return

    if check_parity:
        print(f"\nparity, first step, ours vs torch (deepfm, V={VOCABS['small']:,}, batch {min(batch, 16384)}); "
              f"rel = max|ours - torch| / max|torch| per tensor, goal <= 1e-4")
        bad = 0
        for mode, what, err, ok in parity("deepfm", VOCABS["small"], min(batch, 16384)):
            bad += not ok
            print(f"  {mode:5s} {what:45s} {err:9.2e}  {'ok' if ok else 'FAIL'}")
        print(f"  parity: {'all within 1e-4' if not bad else f'{bad} over 1e-4'}")

    data_s = None
    if not no_data:
        data_s = data_seconds_per_batch(batch)
        print(f"\ndata: BatchReader assembles a batch of {batch} in {data_s * 1e3:.1f} ms "
              f"(in memory, shuffled, without the prefetch thread, which overlaps it with the step)")

    results = []
    for name in models:
        for v in vocabs:
            for mode in modes:
                spec = dict(engine="ours", model=name, vocab=VOCABS[v], mode=mode, batch=batch,
                            steps=steps, warmup=warmup, breakdown=not no_breakdown, malloc=malloc)
                ours = run_in_child(spec)
                theirs = None
                if use_torch and name in TORCH_MODELS:
                    theirs = run_in_child(dict(spec, engine="torch", breakdown=False))
                results.append((name, v, mode, ours, theirs))
                _print_config(name, v, mode, batch, ours, theirs, peak, data_s)

    print("\nsummary (batch %d; ratio = our step / torch step, goal <= %.1f; floor goal <= %.1f at small)"
          % (batch, GOAL_TORCH_RATIO, GOAL_FLOOR_RATIO))
    print(f"  {'model':7s} {'vocab':7s} {'mode':5s} {'ours s':>8s} {'samples/s':>10s} {'torch s':>8s} "
          f"{'ratio':>6s} {'x floor':>7s} {'ours RSS':>10s} {'torch RSS':>10s}")
    for name, v, mode, ours, theirs in results:
        s = ours["step_s"][batch]
        floor_s = dnn_flops(make_model(name, VOCABS["small"]), batch) / (peak * 1e9)
        t = theirs["step_s"][batch] if theirs else float("nan")
        print(f"  {name:7s} {v:7s} {mode:5s} {s:8.3f} {batch / s:10.0f} {t:8.3f} {s / t:6.2f} "
              f"{(s / floor_s if floor_s else float('nan')):7.2f} {_fmt_bytes(ours['maxrss']):>10s} "
              f"{(_fmt_bytes(theirs['maxrss']) if theirs else '-'):>10s}")

    if curve:
        sizes = [b for b in (1 << k for k in range(10, 18)) if b <= batch]
        spec = dict(engine="ours", model="deepfm", vocab=VOCABS[vocabs[0]], mode=modes[0], batch=batch,
                    steps=steps, warmup=warmup, batches=sizes, malloc=malloc)
        ours = run_in_child(spec)
        theirs = run_in_child(dict(spec, engine="torch")) if use_torch else None
        print(f"\nsamples/s against batch size (deepfm, V={VOCABS[vocabs[0]]:,}, {modes[0]} tables)")
        print(f"  {'batch':>7s} {'ours':>10s}" + (f" {'torch':>10s} {'ratio':>6s}" if theirs else ""))
        for B in sizes:
            line = f"  {B:7d} {B / ours['step_s'][B]:10.0f}"
            if theirs:
                line += f" {B / theirs['step_s'][B]:10.0f} {ours['step_s'][B] / theirs['step_s'][B]:6.2f}"
            print(line)


def _print_config(name, v, mode, batch, ours, theirs, peak, data_s):
    s = ours["step_s"][batch]
    print(f"\n{name} V={VOCABS[v]:,} ({v}) {mode} tables: step {s:.3f} s = {batch / s:,.0f} samples/s, "
          f"peak RSS {_fmt_bytes(ours['maxrss'])}")
    if theirs:
        t = theirs["step_s"][batch]
        print(f"  torch: step {t:.3f} s, peak RSS {_fmt_bytes(theirs['maxrss'])}; ours / torch = {s / t:.2f} "
              f"(goal <= {GOAL_TORCH_RATIO}) {'met' if s / t <= GOAL_TORCH_RATIO else 'NOT met'}; "
              f"RSS {'<=' if ours['maxrss'] <= theirs['maxrss'] else '>'} torch's")
    if ours["phases"]:
        phases = ours["phases"]
        total = ours["phase_step_s"]
        print(f"  phases (median of {len(ours['spec']) and ours['spec']['steps']} timed steps; sum "
              f"{sum(phases.values()):.3f} s, timed step {total:.3f} s):")
        for p in PHASES:
            print(f"    {p:12s} {phases[p] * 1e3:9.1f} ms  {100 * phases[p] / total:5.1f} %")
        if data_s is not None:
            print(f"    {'data':12s} {data_s * 1e3:9.1f} ms  (reader, not part of the step)")
        flops = dnn_flops(make_model(name, VOCABS["small"]), batch)
        if flops:
            gemm_s = phases["dnn_fwd"] + phases["dnn_bwd"]
            floor_s = flops / (peak * 1e9)
            print(f"  DNN: {flops / 1e9:.0f} GFLOP per step, {flops / gemm_s / 1e9:.1f} GFLOP/s in the DNN phases "
                  f"({100 * flops / gemm_s / 1e9 / peak:.0f} % of peak); floor {floor_s:.3f} s, "
                  f"step = {s / floor_s:.2f} x floor (goal <= {GOAL_FLOOR_RATIO} at V=337,630)")


if __name__ == "__main__":
    from engine.run.runtime import configure_process

    configure_process()   # keep freed memory, quiet Numba threads (engine/run/runtime.py)
    main()
