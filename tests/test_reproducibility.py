"""validate/audit/reproducibility.py, the logic of device_check's reproducibility lines, on backend cpu
(the simulator runs the same code in tests/test_device_check.py): both checks pass on a
deterministic backend and both fail on one whose row sums change from run to run."""
import dataclasses

import numpy as np

from engine.backend import get_backend
from engine.step import StepConfig
from models import ModelConfig, Schema, build_model
from validate.audit.reproducibility import as_rows, check_reproducibility

CONFIG = StepConfig(lr=1e-2, lr_embed=1e-2, l2=1e-3, clip=1.0, bound=1e-3)


def _model():
    return build_model("deepfm", Schema((50, 30, 7, 200), 13),
                       ModelConfig(embed_dim=4, dnn_hidden=(8, 8), init_stddev=1e-2))


def test_cpu_runs_are_reproducible_and_resumable_bitwise():
    results = check_reproducibility(_model(), get_backend("cpu"), batch_size=256, steps=4, config=CONFIG)
    assert [ok for ok, _ in results] == [True, True], results
    lines = as_rows(results, "deepfm")
    assert len(lines) == 2 and all(line.startswith("PASS") for line in lines)


def test_both_checks_fail_when_row_sums_vary_from_run_to_run():
    cpu = get_backend("cpu")
    noise = np.random.default_rng()                         # unseeded on purpose: differs per call

    def jittery_scatter_add(inverse, src, num_unique):
        rows = cpu.scatter_add_rows(inverse, src, num_unique)
        return rows * (1 + 1e-6 * noise.random(rows.shape)).astype(rows.dtype)

    jittery = dataclasses.replace(cpu, scatter_add_rows=jittery_scatter_add)
    results = check_reproducibility(_model(), jittery, batch_size=256, steps=4, config=CONFIG)
    assert [ok for ok, _ in results] == [False, False], results
    assert all(line.startswith("FAIL") for line in as_rows(results, "deepfm"))
