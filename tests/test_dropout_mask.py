"""engine.layers.mlp.dropout_mask: the host draw unchanged (the run's generator, rng.random), the
device draw from a device generator seeded by one draw of the run's generator (checked here with a
stand-in device module built on NumPy, since CI has no CuPy)."""
import sys
import types

import numpy as np

from engine.layers.mlp import dropout_mask


def test_host_mask_is_the_run_generators_draw():
    got = dropout_mask(np.random.default_rng(3), (50, 7), 0.8, np.zeros((50, 7), np.float32))
    want = (np.random.default_rng(3).random((50, 7)) < 0.8).astype(np.float32) / 0.8
    assert got.dtype == np.float32 and got.tobytes() == want.tobytes()


class DeviceArray:
    """Stands for a device array: not a numpy.ndarray, so array_module_of looks for `cupy`."""
    dtype = np.dtype(np.float32)


def test_device_mask_is_drawn_from_a_seed_of_the_run_generator(monkeypatch):
    seeds = []

    def default_rng(seed):
        seeds.append(seed)
        return np.random.default_rng(seed)

    fake = types.ModuleType("cupy")
    fake.asarray = np.asarray
    fake.random = types.SimpleNamespace(default_rng=default_rng)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    rng, twin = np.random.default_rng(11), np.random.default_rng(11)
    first = dropout_mask(rng, (4000, 5), 0.75, DeviceArray())
    assert seeds == [int(twin.integers(2 ** 63))]                  # one draw of the run's generator
    assert rng.bit_generator.state == twin.bit_generator.state     # and nothing more: no (B, H) host draw
    assert first.dtype == np.float32 and set(np.unique(first)) == {0.0, np.float32(1 / 0.75)}
    assert abs(float((first > 0).mean()) - 0.75) < 0.02
    again = dropout_mask(np.random.default_rng(11), (4000, 5), 0.75, DeviceArray())
    assert again.tobytes() == first.tobytes()                       # same run seed, same masks
