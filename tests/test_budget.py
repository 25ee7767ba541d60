"""validate.study.budget: the gpu preset's device-time plan, checked against the arithmetic by hand."""
import math

import pytest

from validate.study.budget import EVAL_S, RUN_OVERHEAD_S, grid_seconds, plan_budget, step_seconds

V = 337_630   # the synthetic family's table rows at max_vocab 300,000


def test_step_seconds_are_the_measured_ones_plus_dense_adam():
    assert step_seconds(1024, V, "lazy") == 9.0e-3
    assert step_seconds(1024, V, "dense") == pytest.approx(9.0e-3 + 10.9e-3 * V / 33_762_577, rel=1e-12)
    assert step_seconds(131072, 0, "lazy") == pytest.approx(131072 / 3.1e6)
    assert step_seconds(16384, 0, "lazy") == pytest.approx(math.sqrt(8.0e-3 * 11.0e-3), rel=1e-12)  # log-log midpoint
    assert step_seconds(256, 0, "lazy") == 9.0e-3                        # launch-bound below 1K
    assert step_seconds(262144, 0, "lazy") == pytest.approx(2 * 131072 / 3.1e6)


def _gpu_runs():
    # the gpu preset: 1K none (2 seeds), cowclip, cowclip_noclip; 5 rules at 8K, 32K; 5 rules x 2 seeds at 128K
    return [(1024, "dense")] * 4 + [(8192, "dense")] * 5 + [(32768, "dense")] * 5 + [(131072, "dense")] * 10


def test_the_gpu_grid_at_criteo_size_gets_the_largest_fraction_that_fits():
    runs, rows = _gpu_runs(), 36_000_000
    plan = plan_budget(runs, rows, V, 480.0)
    assert plan.epochs == 1 and 0 < plan.fraction < 1
    assert plan.seconds <= 480.0 < grid_seconds(runs, rows, V, plan.fraction + 0.01, 1)
    # one full epoch: 24 runs' fixed costs plus every run's steps at its step time
    by_hand = sum(RUN_OVERHEAD_S + EVAL_S + math.ceil(rows / bs) * step_seconds(bs, V) for bs, _ in runs)
    assert plan.full_epoch_seconds == pytest.approx(by_hand, rel=1e-12)
    assert plan.max_steps(35_157) == math.floor(plan.fraction * 35_157) and plan.max_steps(3) >= 1


def test_a_small_grid_gets_whole_epochs():
    runs, rows = _gpu_runs(), 3_600_000
    plan = plan_budget(runs, rows, V, 480.0)
    assert plan.fraction == 1.0 and plan.max_steps(100) == 0
    assert grid_seconds(runs, rows, V, plan.epochs, plan.epochs) <= 480.0
    assert grid_seconds(runs, rows, V, plan.epochs + 1, plan.epochs + 1) > 480.0


def test_a_budget_below_the_fixed_costs_is_refused():
    with pytest.raises(ValueError, match="fixed costs"):
        plan_budget(_gpu_runs(), 36_000_000, V, 10.0)


def test_the_gpu_preset_trains_24_distinct_runs():
    from validate.study.scaling import PRESETS, trained_runs

    grid = dict(PRESETS["gpu"])
    runs = trained_runs(grid, "synthetic", 1)
    assert sorted(runs) == sorted(_gpu_runs())
