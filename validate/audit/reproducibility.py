"""Same inputs, same bits: the two reproducibility checks of `validate.device_check`.

    same_seed_twice              two runs of S training steps from the same seed and batches end
                                 with bitwise identical parameters and Adam moments
    resumed_equals_uninterrupted a run stopped after k steps, written with engine.run.checkpoint,
                                 dropped, loaded into fresh arrays and continued to S steps equals
                                 the run that never stopped, bitwise

Each returns (passed, a one-line detail). They run any backend: `cuda` on a GPU (the point),
`cuda` under NUMBA_ENABLE_CUDASIM=1 or `cpu` in tests (tests/test_reproducibility.py).
Batches come from the bench fixture (validate.speed.bench.make_batch), made on the host and moved once.
"""
from __future__ import annotations

import tempfile

from engine.run.checkpoint import load_checkpoint, save_checkpoint
from engine.optim import AdamState
from engine.step import train_step


def device_batches(model, kernels, batch_size: int, steps: int) -> list:
    from validate.speed.bench import make_batch

    out = []
    for seed in range(steps):
        batch = make_batch(model, batch_size, seed)
        out.append(type(batch)(*(kernels.asarray(a) for a in batch)))
    return out


def fresh_run(model, kernels, seed: int) -> tuple[dict, AdamState]:
    params = {k: kernels.xp.array(v) for k, v in model.init_params(seed).items()}   # copies
    return params, AdamState.zeros_like(params, kernels.xp)


def train(model, kernels, params: dict, state: AdamState, batches, config) -> None:
    for batch in batches:
        train_step(model, params, state, batch, config, kernels)


def snapshot(params: dict, state: AdamState, kernels) -> dict:
    """name -> bytes of every parameter and moment, on the host."""
    out = {f"param/{k}": kernels.to_host(v).tobytes() for k, v in params.items()}
    out.update({f"m/{k}": kernels.to_host(v).tobytes() for k, v in state.m.items()})
    out.update({f"v/{k}": kernels.to_host(v).tobytes() for k, v in state.v.items()})
    out["updates"] = str(state.updates).encode()
    return out


def _compare(a: dict, b: dict, what: str) -> tuple[bool, str]:
    differing = sorted(k for k in a if a[k] != b.get(k))
    if differing:
        return False, f"{what}: {len(differing)} of {len(a)} arrays differ, e.g. {differing[:3]}"
    return True, f"{what}: all {len(a)} arrays bitwise equal"


def same_seed_twice(model, kernels, batches, config, seed: int = 0) -> tuple[bool, str]:
    results = []
    for _ in range(2):
        params, state = fresh_run(model, kernels, seed)
        train(model, kernels, params, state, batches, config)
        results.append(snapshot(params, state, kernels))
    return _compare(*results, f"{len(batches)} steps, seed {seed}, twice")


def resumed_equals_uninterrupted(model, kernels, batches, config, stop_after: int,
                                 seed: int = 0) -> tuple[bool, str]:
    params, state = fresh_run(model, kernels, seed)
    train(model, kernels, params, state, batches, config)
    whole = snapshot(params, state, kernels)

    params, state = fresh_run(model, kernels, seed)
    train(model, kernels, params, state, batches[:stop_after], config)
    with tempfile.TemporaryDirectory(prefix="cowclip-resume-") as run_dir:
        save_checkpoint(run_dir, params, state, {"global_step": stop_after}, None, kernels.to_host)
        del params, state                                        # the stopped run is gone
        params, state, position = load_checkpoint(run_dir, kernels.asarray)
    train(model, kernels, params, state, batches[position["global_step"]:], config)
    resumed = snapshot(params, state, kernels)
    return _compare(whole, resumed, f"stopped after {stop_after} of {len(batches)} steps, resumed")


def check_reproducibility(model, kernels, batch_size: int, steps: int, config) -> list[tuple[bool, str]]:
    """Both checks on one model; -> [(passed, detail), ...]."""
    batches = device_batches(model, kernels, batch_size, steps)
    return [same_seed_twice(model, kernels, batches, config),
            resumed_equals_uninterrupted(model, kernels, batches, config, stop_after=steps // 2)]


def as_rows(results: list[tuple[bool, str]], label: str) -> list[str]:
    return [f"{'PASS' if ok else 'FAIL'}  reproducibility {label}: {detail}" for ok, detail in results]
