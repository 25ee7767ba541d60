"""The GPU path against the CPU path, and its speed, on a machine with CUDA.

    python -m validate.device_check                                   # a CUDA machine, < 5 minutes
    NUMBA_ENABLE_CUDASIM=1 python -m validate.device_check --tiny     # CUDA simulator smoke test

Needs CuPy (any CUDA build, imported as `cupy`), Numba and its CUDA target; no network, no
install: run it from the repository root. Without a usable GPU it prints one line saying why and
exits with status 2 (nothing was checked).

  1. kernels   every CUDA kernel of engine/kernels against the Numba CPU kernel, same inputs
               (float32, atol + rtol * |cpu|, rtol 1e-5); scatter_add_rows against a float64
               sum within its derived error bound, and bitwise equal over two runs
  2. step      one train_step of each model on get_backend('cuda') against get_backend('cpu'),
               same init params and batch: the loss, and every parameter after the update, as
               max |gpu - cpu| / max |cpu| per tensor <= 1e-4 (float32)
  2b. repro    DeepFM, dense and lazy tables: two runs from the same seed end with bitwise equal
               parameters and moments, and a run stopped, checkpointed and resumed equals the
               one that never stopped (validate/audit/reproducibility.py); PASS/FAIL lines
  3. speed     samples/s of DeepFM at batch 131072 (V = 33,762,577, dense tables), batches
               resident in GPU memory, with and without CowClip, and the share of the step
               that the CowClip kernel takes
  4. torch     issue 14's table: ms per step of DeepFM, ours (engine.step.train_step) against
               the bench's PyTorch twin (validate.speed.torch_twin.torch_twin) on the same GPU, same params
               and batches, median of 8 steps after 2; skipped with a line when PyTorch or its
               CUDA is absent. Strict float32 on both sides (CuPy and torch do not use TF32 for
               float32 GEMMs unless asked: CUPY_TF32=1, torch.backends.cuda.matmul.allow_tf32)

It prints the checks' table, then the PyTorch table; the exit status is 1 if a check failed.
Symbols: B batch, F sparse fields, K embedding dim, V table rows, U unique ids in a batch.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time

import click
import numpy as np

from validate.errors import normwise_rel_error

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
RTOL_KERNEL, RTOL_STEP = 1e-5, 1e-4


def unavailable_reason() -> str | None:
    """None when the CUDA path can run here (a GPU, or the simulator), else a one-line reason."""
    if SIMULATOR:
        return None
    from engine.backend import cuda_unavailable_reason

    reason = cuda_unavailable_reason()
    if reason:
        return reason
    try:
        from engine.kernels.common import cuda  # after the compatibility shims

        if not cuda.is_available():
            return "Numba sees no CUDA device (is numba-cuda installed and the driver loaded?)"
    except Exception as error:  # an import error or a driver error, reported in one line
        return f"Numba's CUDA target is not usable: {str(error).splitlines()[0]}"
    return None


def synchronize(xp) -> None:
    if xp is not np:
        xp.cuda.Device().synchronize()


def close(got, want, rtol: float) -> float:
    """The largest |got - want| / (rtol + rtol * |want|), elementwise; <= 1 passes."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if want.size == 0:
        return 0.0
    return float(np.max(np.abs(got - want) / (rtol + rtol * np.abs(want))))


# --------------------------------------------------------------------------------------------
# 1. kernels


def scatter_add_error_ratio(got, inverse, src, num_unique: int) -> float:
    """max |got - ref| / bound, ref the float64 sum in batch order (itself within
    gamma_{n-1} sum|x| of the exact sum S, u64 = 2^-53): bound = u32 |S| + (1 + u32) gamma_d sum|x|
    + gamma_{n-1} sum|x|, with |S| <= |ref| + gamma_{n-1} sum|x| (see engine/kernels/scatter_add.py)."""
    from engine.kernels.scatter_add import SEGMENT_CHUNK

    u32, u64 = 2.0 ** -24, 2.0 ** -53
    ref = np.zeros((num_unique, src.shape[1]))
    np.add.at(ref, inverse, src.astype(np.float64))
    abs_sum = np.zeros_like(ref)
    np.add.at(abs_sum, inverse, np.abs(src.astype(np.float64)))
    n = np.bincount(inverse, minlength=num_unique)[:, None].astype(np.float64)      # (U, 1)
    d = np.minimum(n, SEGMENT_CHUNK) - 1 + np.ceil(n / SEGMENT_CHUNK) - 1
    gamma_d, gamma_n = d * u64 / (1 - d * u64), (n - 1) * u64 / (1 - (n - 1) * u64)
    bound = u32 * (np.abs(ref) + gamma_n * abs_sum) + (1 + u32) * gamma_d * abs_sum + gamma_n * abs_sum
    return float(np.max(np.abs(got.astype(np.float64) - ref) / np.maximum(bound, 1e-300)))


def check_kernels(cpu, gpu, V: int, N: int, K: int, rows: list) -> None:
    """Each kernel of the backend table, on the same float32 inputs, GPU against CPU."""
    rng = np.random.default_rng(0)
    ids = np.concatenate([np.zeros(N // 4, dtype=np.int64),                 # one id many times
                          rng.integers(0, V, N - N // 4)])
    src = rng.normal(size=(N, K)).astype(np.float32)                       # (N, K)
    table = rng.normal(size=(V, K)).astype(np.float32)                     # (V, K)
    to_gpu, host = gpu.xp.array, gpu.to_host   # xp.array copies (under the simulator xp is NumPy)

    # index_ids: CPU returns ids in order of first occurrence, GPU sorted; compare as sets
    c_unique, c_inverse, c_counts = cpu.index_ids(ids, V)
    g_unique, g_inverse, g_counts = (host(a) for a in gpu.index_ids(to_gpu(ids), V))
    order = np.argsort(c_unique)
    same = (np.array_equal(c_unique[order], g_unique) and np.array_equal(c_counts[order], g_counts)
            and np.array_equal(g_unique[g_inverse], ids))
    rows.append(("kernel", "index_ids", 0.0 if same else np.inf, "equal"))

    # scatter_add_rows: against a float64 sum, within the bound derived in engine/kernels/scatter_add.py
    # (the CPU kernel sums in float32, so it is itself further off for the id seen N/4 times)
    c_rows = cpu.scatter_add_rows(c_inverse, src, c_unique.size)[order]
    g_rows = host(gpu.scatter_add_rows(to_gpu(g_inverse), to_gpu(src), g_unique.size))
    rows.append(("kernel", "scatter_add_rows / its error bound",
                 scatter_add_error_ratio(g_rows, g_inverse, src, g_unique.size), "<= 1"))
    again = host(gpu.scatter_add_rows(to_gpu(g_inverse), to_gpu(src), g_unique.size))
    rows.append(("kernel", "scatter_add_rows: bits differ between two runs", float(again.tobytes() != g_rows.tobytes()),
                 "equal"))

    # cowclip_rows, in place on the rows, with scales
    unique, counts = g_unique, g_counts
    table[unique[1]] = 0.0                                                  # a zero weight row
    ratio, floor = 0.5, 1e-3
    c_clipped = c_rows.copy()
    c_scales = cpu.cowclip_rows(c_clipped, table, unique, counts, ratio, floor)
    g_clipped = to_gpu(c_rows)
    g_scales = host(gpu.cowclip_rows(g_clipped, to_gpu(table), to_gpu(unique), to_gpu(counts), ratio, floor))
    rows.append(("kernel", "cowclip_rows (rows)", close(host(g_clipped), c_clipped, RTOL_KERNEL), "<= 1"))
    rows.append(("kernel", "cowclip_rows (scales)", close(g_scales, c_scales, RTOL_KERNEL), "<= 1"))

    # adam_rows and adam_table, two updates so that the moments are not zero
    for name in ("adam_rows", "adam_table"):
        state_c = [table.copy(), np.zeros_like(table), np.zeros_like(table)]
        state_g = [to_gpu(a) for a in state_c]
        for t in (1, 2):
            lr_t = 1e-2 * (1 - 0.999 ** t) ** 0.5 / (1 - 0.9 ** t)
            if name == "adam_rows":
                cpu.adam_rows(*state_c, unique, c_clipped, lr_t, 0.9, 0.999, 1e-7)
                gpu.adam_rows(*state_g, to_gpu(unique), to_gpu(c_clipped), lr_t, 0.9, 0.999, 1e-7)
            else:
                cpu.adam_table(*state_c, unique, c_clipped, 0.1, True, ratio, floor, lr_t, 0.9, 0.999, 1e-7)
                gpu.adam_table(*state_g, to_gpu(unique), to_gpu(c_clipped), 0.1, True, ratio, floor,
                               lr_t, 0.9, 0.999, 1e-7)
        worst = max(close(host(g), c, RTOL_KERNEL) for g, c in zip(state_g, state_c))
        rows.append(("kernel", f"{name} (table, m, v)", worst, "<= 1"))


# --------------------------------------------------------------------------------------------
# 2. one step of each model


def check_steps(cpu, gpu, vocab: int, batch_size: int, config, rows: list) -> None:
    from engine.optim import AdamState
    from engine.step import StepConfig, train_step
    from models import MODELS, Schema, build_model
    from validate.speed.problem import make_batch, make_params, vocab_sizes

    schema = Schema(vocab_sizes(vocab), 13)
    cases = [(name, "dense") for name in MODELS] + [("deepfm", "lazy")]
    for name, mode in cases:
        model = build_model(name, schema, config)
        params_c = make_params(model, seed=1)
        params_g = {k: gpu.xp.array(v) for k, v in params_c.items()}       # copies
        batch_c = make_batch(model, batch_size, seed=3)
        batch_g = type(batch_c)(*(gpu.asarray(a) for a in batch_c))
        step = StepConfig(lr=1e-3, lr_embed=1e-3, l2=1e-5, clip=1.0, bound=1e-5, clip_form="reference",
                          embed_optim=mode)
        info_c = train_step(model, params_c, AdamState.zeros_like(params_c, np), batch_c, step, cpu)
        info_g = train_step(model, params_g, AdamState.zeros_like(params_g, gpu.xp), batch_g, step, gpu)
        loss_err = abs(info_g["loss"] - info_c["loss"]) / abs(info_c["loss"])
        worst_name, worst = "loss", loss_err
        for key in params_c:
            err = normwise_rel_error(gpu.to_host(params_g[key]), params_c[key])
            if err > worst:
                worst_name, worst = key, err
        rows.append(("step", f"{name} {mode} (worst: {worst_name})", worst / RTOL_STEP, "<= 1"))


# --------------------------------------------------------------------------------------------
# 2b. same seed, same bits; a stopped and resumed run equals an uninterrupted one


def check_reproducible(gpu, vocab: int, batch_size: int, config, rows: list, steps: int = 4,
                       modes: tuple = ("dense", "lazy")) -> None:
    from engine.step import StepConfig
    from models import Schema, build_model
    from validate.speed.problem import vocab_sizes
    from validate.audit.reproducibility import as_rows, check_reproducibility

    model = build_model("deepfm", Schema(vocab_sizes(vocab), 13), config)
    for mode in modes:
        step = StepConfig(lr=1e-3, lr_embed=1e-3, l2=1e-5, clip=1.0, bound=1e-5, embed_optim=mode)
        results = check_reproducibility(model, gpu, batch_size, steps, step)
        for line in as_rows(results, f"deepfm {mode}"):
            print("  " + line)
        for (ok, _), what in zip(results, ("same seed twice", "stopped + resumed = uninterrupted")):
            rows.append(("repro", f"deepfm {mode}: {what} (0 = bitwise)", 0.0 if ok else 1.0, "equal"))


# --------------------------------------------------------------------------------------------
# 3. speed


def measure_speed(gpu, vocab: int, batch_size: int, config, steps: int, warmup: int, rows: list) -> None:
    from engine.optim import AdamState
    from engine.step import StepConfig, train_step
    from models import Schema, build_model
    from validate.speed.problem import make_batch, make_params, vocab_sizes

    xp = gpu.xp
    model = build_model("deepfm", Schema(vocab_sizes(vocab), 13), config)
    params = {k: gpu.asarray(v) for k, v in make_params(model).items()}
    state = AdamState.zeros_like(params, xp)
    batches = []
    for seed in range(2):                                 # resident in GPU memory before timing
        b = make_batch(model, batch_size, seed)
        batches.append(type(b)(*(gpu.asarray(a) for a in b)))
    clip_seconds = []

    def timed_cowclip(*args):
        synchronize(xp)
        t0 = time.perf_counter()
        scales = gpu.cowclip_rows(*args)
        synchronize(xp)
        clip_seconds.append(time.perf_counter() - t0)
        return scales

    timed = dataclasses.replace(gpu, cowclip_rows=timed_cowclip)
    for clip in (0.0, 1.0):
        step = StepConfig(l2=1e-5, clip=clip, bound=1e-5, clip_form="reference", embed_optim="dense")
        times = []
        for i in range(warmup + steps):                   # warm-up steps compile the kernels
            synchronize(xp)
            t0 = time.perf_counter()
            train_step(model, params, state, batches[i % 2], step, timed)
            synchronize(xp)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        seconds = float(np.median(times))
        label = "with CowClip" if clip else "without CowClip"
        rows.append(("speed", f"deepfm B={batch_size} V={vocab:,} {label}", batch_size / seconds, "samples/s"))
        if clip:
            share = float(np.median(clip_seconds[-steps:])) / seconds
            rows.append(("speed", "CowClip kernel share of the step", 100 * share, "%"))
            rows.append(("speed", "step time with / without CowClip", seconds / no_clip_seconds, "ratio"))
        no_clip_seconds = seconds


# --------------------------------------------------------------------------------------------
# 4. against PyTorch on the same GPU (issue 14's table)

# (vocabulary, embedding mode, batch): the rows of issue 14's table
VERSUS_TORCH = [(337_630, "dense", 131072), (337_630, "lazy", 131072),
                (33_762_577, "dense", 131072), (33_762_577, "lazy", 131072),
                (33_762_577, "lazy", 1024), (33_762_577, "lazy", 8192), (33_762_577, "lazy", 32768)]


TWIN_DEVICE = "cpu" if SIMULATOR else "cuda"     # under the simulator: the code path, on the CPU


def torch_twin_unavailable_reason() -> str | None:
    from validate.speed.torch_twin import torch_unavailable_reason

    reason = torch_unavailable_reason()
    if reason or TWIN_DEVICE == "cpu":
        return reason
    import torch

    return None if torch.cuda.is_available() else "PyTorch sees no CUDA device"


def median_step_ms(step, batches, steps: int, warmup: int, synchronize_all) -> float:
    """Median over `steps` of one call of step(batch), synchronised before and after."""
    times = []
    for i in range(warmup + steps):
        synchronize_all()
        t0 = time.perf_counter()
        step(batches[i % len(batches)])
        synchronize_all()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def ours_ms(gpu, model, host_params: dict, host_batches: list, config, steps: int, warmup: int) -> float:
    """Median ms of engine.step.train_step on `gpu`, params and batches copied there first (copies
    under the simulator too: host_params stay the initial values that the twin starts from)."""
    from engine.optim import AdamState
    from engine.step import train_step

    params = {k: gpu.xp.array(v) for k, v in host_params.items()}
    state = AdamState.zeros_like(params, gpu.xp)
    batches = [type(b)(*(gpu.asarray(a) for a in b)) for b in host_batches]
    return median_step_ms(lambda b: train_step(model, params, state, b, config, gpu),
                          batches, steps, warmup, lambda: synchronize(gpu.xp))


def versus_torch(gpu, cases: list, steps: int, warmup: int, model_config=None) -> list[tuple]:
    """-> [(label, torch ms or None, ours ms)]: DeepFM, the bench's problem (validate.speed.bench: same
    params, same batches, reference-form CowClip, L2), ours = engine.step.train_step on `gpu`,
    theirs = validate.speed.torch_twin.torch_twin on 'cuda' (skipped, with the reason printed, without it;
    under the simulator the twin runs on the CPU, to exercise this code).
    model_config: a smaller DeepFM than the bench's (the simulator's smoke run)."""
    from models import Schema, build_model
    from validate.speed.problem import NUM_DENSE, make_batch, make_model, make_params, step_config, vocab_sizes
    from validate.speed.torch_twin import torch_twin

    reason = torch_twin_unavailable_reason()
    if reason:
        print(f"  torch twin: skipped ({reason})")
    xp = gpu.xp
    out = []
    host = {}
    for vocab, mode, batch_size in cases:
        if vocab not in host:
            host.clear()                                  # one vocabulary's params on the host at a time
            model = (make_model("deepfm", vocab) if model_config is None else
                     build_model("deepfm", Schema(vocab_sizes(vocab), NUM_DENSE), model_config))
            host[vocab] = (model, make_params(model))
        model, host_params = host[vocab]
        host_batches = [make_batch(model, batch_size, seed) for seed in range(2)]
        ours = ours_ms(gpu, model, host_params, host_batches, step_config(mode), steps, warmup)
        theirs = None
        if reason is None:
            import torch

            _, torch_step, _ = torch_twin(model, host_params, mode, share_memory=False, device=TWIN_DEVICE)
            torch_batches = [tuple(torch.from_numpy(a).to(TWIN_DEVICE) for a in b) for b in host_batches]
            torch_sync = torch.cuda.synchronize if TWIN_DEVICE == "cuda" else (lambda: None)
            theirs = median_step_ms(torch_step, torch_batches, steps, warmup, torch_sync)
            del torch_step, torch_batches
            if TWIN_DEVICE == "cuda":
                torch.cuda.empty_cache()
        if xp is not np:
            xp.get_default_memory_pool().free_all_blocks()
        label = f"V={vocab:,} {mode} B={batch_size}"
        print(f"  {label}: ours {ours:.2f} ms" + (f", torch {theirs:.2f} ms" if theirs else ""), flush=True)
        out.append((label, theirs, ours))
    return out


def print_versus_torch(results: list[tuple]) -> None:
    print(f"\n{'DeepFM (ours: engine.step.train_step)':40s} {'torch ms':>9s} {'ours ms':>9s} {'ours/torch':>11s}")
    for label, theirs, ours in results:
        ratio = f"{ours / theirs:11.2f}" if theirs else f"{'-':>11s}"
        shown = f"{theirs:9.2f}" if theirs else f"{'-':>9s}"
        print(f"{label:40s} {shown} {ours:9.2f} {ratio}")


# --------------------------------------------------------------------------------------------


def print_table(rows: list) -> int:
    """-> number of failed checks."""
    failed = 0
    print(f"\n{'part':6s} {'what':52s} {'value':>12s}  unit/goal")
    for part, what, value, goal in rows:
        mark = ""
        if goal.startswith("<=") or goal == "equal":
            ok = value <= (1.0 if goal.startswith("<=") else 0.0)
            failed += not ok
            mark = "ok" if ok else "FAIL"
        shown = f"{value:12.3g}" if part != "speed" or goal != "samples/s" else f"{value:12,.0f}"
        print(f"{part:6s} {what:52s} {shown}  {goal:10s} {mark}")
    print(f"{len([r for r in rows if r[3].startswith('<=') or r[3] == 'equal'])} checks, {failed} failed")
    return failed


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--tiny", is_flag=True, help="tiny sizes (for the CUDA simulator)")
@click.option("--steps", default=5, show_default=True, help="timed steps of part 3 (median)")
def main(tiny: bool, steps: int) -> None:
    """Check the CUDA path against the CPU path (kernels, a step of every model), its bitwise
    reproducibility (same seed twice; stopped and resumed), and time DeepFM against a PyTorch twin
    on the same GPU. Exit 0: all checks passed; 1: a check failed; 2: no GPU here."""
    reason = unavailable_reason()
    if reason:
        print(f"device_check: skipped, no GPU to check: {reason}")
        sys.exit(2)
    from engine.backend import get_backend
    from models import ModelConfig

    cpu, gpu = get_backend("cpu"), get_backend("cuda")
    where = "CUDA simulator" if SIMULATOR else _device_name(gpu.xp)
    print(f"device_check on {where}{' (tiny sizes)' if tiny else ''}")
    if tiny:
        config = ModelConfig(embed_dim=3, dnn_hidden=(4, 4), cross_layers=1, num_experts=2, low_rank=2)
        kernel_sizes, step_sizes, speed_sizes = (60, 200, 4), (300, 16), (300, 16)
    else:
        config = ModelConfig()
        kernel_sizes, step_sizes, speed_sizes = (1_000_003, 3_000_000, 10), (337_630, 4096), (33_762_577, 131072)
    rows: list = []
    t0 = time.perf_counter()
    check_kernels(cpu, gpu, *kernel_sizes, rows)
    print(f"  kernels checked in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    check_steps(cpu, gpu, *step_sizes, config, rows)
    print(f"  steps checked in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    check_reproducible(gpu, *step_sizes, config, rows, *((2, ("dense",)) if tiny else ()))
    print(f"  reproducibility checked in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    measure_speed(gpu, *speed_sizes, config, 1 if tiny else steps, 1 if tiny else 2, rows)
    print(f"  speed measured in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    if tiny:      # the bench's model at a tiny vocabulary and batch: the code path, not a number
        cases, timed, warm = [(300, "dense", 16), (300, "lazy", 16)], 1, 0
    else:
        cases, timed, warm = VERSUS_TORCH, 8, 2
    versus = versus_torch(gpu, cases, timed, warm, config if tiny else None)
    print(f"  PyTorch comparison in {time.perf_counter() - t0:.1f} s")
    failed = print_table(rows)
    print_versus_torch(versus)
    sys.exit(1 if failed else 0)


def _device_name(xp) -> str:
    try:
        props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
        return props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    except Exception:  # only a label
        return "CUDA device"


if __name__ == "__main__":
    main()
