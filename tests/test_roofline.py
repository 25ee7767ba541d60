"""validate.speed.roofline: its launch and sync counts are those of a real step, and its bytes follow the shapes."""
import json
import os
import subprocess
import sys
from pathlib import Path

from validate.speed.roofline import GPUS, model_shape, phase_costs, roofline

ROOT = Path(__file__).resolve().parents[1]

# the independent count: every simulated kernel launch, at the simulator's kernel class, during the
# same counted step
SCRIPT = r"""
import json, sys
from collections import Counter
from numba.cuda.simulator import kernel as simulated
seen = Counter()
configure = simulated.FakeCUDAKernel.__getitem__
def counting(self, config):
    seen[self.fn.__name__] += 1
    return configure(self, config)
simulated.FakeCUDAKernel.__getitem__ = counting
from validate.speed.roofline import counted_step
counts = counted_step(sys.argv[1], sys.argv[2])
print(json.dumps({"roofline": counts, "simulator": dict(seen)}))
"""


def _both_counts(model, embed_optim):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", SCRIPT, model, embed_optim], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_launch_and_sync_counts_are_those_of_a_simulated_step():
    both = _both_counts("deepfm", "dense")
    counts = both["roofline"]
    assert counts["launches"] == both["simulator"]
    # the host read-backs of a step on the device reader's batches: the unique ids' count, the divergence check
    assert counts["syncs"] == {"unique size": 1, "divergence check": 1}
    assert counts["launches"]["_adam_table_kernel"] == 2          # both tables, dense mode
    result = roofline("deepfm", 1024, 337_630, "dense", "H200", counts=counts)
    assert result["launches"] == sum(both["simulator"].values()) and result["syncs"] == 2


def test_bytes_follow_the_shapes_and_the_table_mode():
    dense = model_shape("deepfm", 4096, 337_630, "dense", 0.25)
    lazy = model_shape("deepfm", 4096, 337_630, "lazy", 0.25)
    V, C = dense.V, dense.K + 1
    assert phase_costs(dense)["adam_tables"][0] == V * C * 24 + 8 * V         # table, m, v in and out; the map
    assert phase_costs(lazy)["adam_tables"][0] < phase_costs(dense)["adam_tables"][0]
    twice = phase_costs(model_shape("deepfm", 8192, 337_630, "dense", 0.25))
    assert twice["dnn_fwd"][1] == 2 * phase_costs(dense)["dnn_fwd"][1]       # GEMM FLOPs linear in B


def test_modelled_deepfm_step_at_criteo_scale_on_h200_within_16_ms():
    counts = {"launches": {"k": 19}, "syncs": {"s": 2}}
    result = roofline("deepfm", 131072, 33_762_577, "dense", "H200", counts=counts)
    assert result["modelled_s"] <= 16e-3, result["modelled_s"]
    slower = roofline("deepfm", 131072, 33_762_577, "dense", "V100", counts=counts)
    assert slower["floor_s"] > 2 * result["floor_s"]                        # 5.3x less bandwidth, 4.3x less float32
    assert set(GPUS) == {"H200", "A100", "V100"}
