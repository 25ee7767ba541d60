"""A run that cannot fit in memory is refused with the numbers, before anything large is allocated
(engine/run/footprint.py)."""

import pytest

from engine import train
from engine.run.footprint import estimate
from models import MODELS, ModelConfig, Schema, build_model
from run_cases import base, data, invoke  # noqa: F401 (tests/; data is a fixture)


def test_a_run_that_cannot_fit_is_refused_with_the_numbers(data, tmp_path, monkeypatch):
    monkeypatch.setattr("engine.run.footprint.available_host_bytes", lambda: 1 << 10)
    out = tmp_path / "r"
    result = invoke(train.main, [*base(data), "--out", out])
    assert result.exit_code == 1 and "not enough memory" in result.output
    assert "GiB" in result.output and "MemAvailable" in result.output
    assert not (out / "config.json").exists()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_estimate_counts_every_parameter(name):
    schema = Schema(vocab_sizes=(7, 30, 4), num_dense=5)
    model = build_model(name, schema, ModelConfig(embed_dim=3, dnn_hidden=(6, 4)))
    params = model.init_params(0)
    assert model.param_shapes() == {k: v.shape for k, v in params.items()}
    parts = estimate(model, batch_rows=100, train_rows_in_memory=1000, test_rows=10)
    assert parts["params"] == sum(v.nbytes for v in params.values()) and parts["adam"] == 2 * parts["params"]
    assert parts["batch"] > 100 * 4 * (3 + 5 + 1) and parts["data"] == 1010 * 4 * (3 + 5 + 2)


def test_on_a_gpu_the_device_part_is_held_against_its_free_memory(monkeypatch):
    """No GPU in CI: a stand-in for CuPy's memGetInfo and memory pool carries the numbers."""
    from types import SimpleNamespace

    from engine.run.footprint import MemoryShortError, check_fits

    fake_cupy = SimpleNamespace(cuda=SimpleNamespace(runtime=SimpleNamespace(memGetInfo=lambda: (3 << 30, 8 << 30))),
                                get_default_memory_pool=lambda: SimpleNamespace(free_bytes=lambda: 1 << 30))
    monkeypatch.setattr("engine.run.footprint.available_host_bytes", lambda: 100 << 30)
    gib = 1 << 30
    check_fits({"params": gib, "adam": 2 * gib, "batch": gib // 2, "data": 50 * gib}, fake_cupy)  # 3.5 <= 4 GiB
    with pytest.raises(MemoryShortError, match=r"needs at least 5.00 GiB .* 4.00 GiB is free on the GPU"):
        check_fits({"params": gib, "adam": 2 * gib, "batch": 2 * gib, "data": gib}, fake_cupy)
    with pytest.raises(MemoryShortError, match=r"data 120.00 GiB\), 100.00 GiB is available"):
        check_fits({"params": 1, "adam": 2, "batch": 1, "data": 120 * gib}, fake_cupy)
