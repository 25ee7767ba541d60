"""The tools that report: the preprocessing benchmark measures each child's own peak memory (not the
parent's), says what it measured and whether each goal is met; the CUDA install hint is the README's."""
import numpy as np
import pytest

from dataio import bench_preprocess


def test_a_childs_peak_memory_holds_nothing_of_the_parent(tmp_path):
    parent_holds = np.ones(300 * 2**20 // 8)          # 300 MiB in this process while the child runs
    _, small = bench_preprocess.run_child("x = 1", [], tmp_path)
    _, large = bench_preprocess.run_child("import numpy as np; a = np.ones(200 * 2**20 // 8)", [], tmp_path)
    assert parent_holds.sum() > 0
    assert small < 100 * 2**20                          # a bare interpreter, not the parent's 300 MiB
    assert 200 * 2**20 < large < small + 260 * 2**20    # the child's own 200 MiB is seen
    assert list(tmp_path.iterdir()) == []               # the peak files are removed


def test_a_failing_child_is_one_line(tmp_path):
    import click

    with pytest.raises(click.ClickException, match="failed with exit status 3"):
        bench_preprocess.run_child("raise SystemExit(3)", ["arg"], tmp_path)


def test_goals_say_met_or_not():
    assert bench_preprocess.goal_text(2.5, 2, True) == "goal >= 2: met"
    assert bench_preprocess.goal_text(1.7, 2, True) == "goal >= 2: NOT met"
    assert bench_preprocess.goal_text(0.996, 0.5, False) == "goal <= 0.5: NOT met"
    assert "VmHWM" in bench_preprocess.MEASURED


def test_the_cuda_install_hint_is_the_readmes(monkeypatch):
    import builtins

    from engine.backend import cuda_unavailable_reason

    real_import = builtins.__import__

    def no_cupy(name, *args, **kwargs):
        if name == "cupy" or name.startswith("cupy."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cupy)
    assert 'pip install -e ".[cuda]"' in cuda_unavailable_reason()


def test_shard_tables_help_shows_a_single_percent():
    from click.testing import CliRunner

    from engine import train

    output = CliRunner().invoke(train.main, ["-h"], terminal_width=200).output
    assert "row % N == r" in output and "%%" not in output
