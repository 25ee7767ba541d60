"""engine.plot: samples seen on the x-axis when batch sizes differ, labels from config.json, one legend,
valid AUC, NE, calibration and the Bayes-optimal line; the PNG opened and checked; bad input refused
with one line."""
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("matplotlib")

from engine import plot, train  # noqa: E402

TRAIN_ROWS = 1000


def fake_run(root, name, bs, evals, steps=(), data=None, **config):
    """A run directory as engine.train writes it: config.json and metrics.jsonl."""
    run = root / name
    run.mkdir()
    cfg = {"model": "deepfm", "bs": bs, "scale_rule": "auto", "hp": {"clip": 1.0}, "data": str(data), **config}
    (run / "config.json").write_text(json.dumps(cfg))
    lines = [{"type": "step", "epoch": 1, "step": s, "loss": 0.5 - 0.01 * s} for s in steps]
    lines += [{"type": "eval", "epoch": 1, **e} for e in evals]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run


@pytest.fixture
def data_dir(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "meta.json").write_text(json.dumps({"splits": {"train": {"rows": TRAIN_ROWS}}}))
    return data


def _eval(step, auc, **more):
    return {"step": step, "auc": auc, "logloss": 0.5, "ne": 0.9, "calibration": 1.02, **more}


def test_samples_seen_count_the_partial_last_batch(data_dir, tmp_path):
    run = plot.read_run(fake_run(tmp_path, "r", 300, [_eval(4, 0.7)], data=data_dir))
    # 1000 rows at bs 300: 4 batches an epoch (300, 300, 300, 100)
    assert [run.x(s, "samples") for s in (1, 3, 4, 5, 8)] == [300, 900, 1000, 1300, 2000]
    assert run.x(6, "epochs") == pytest.approx(1.6)
    assert run.x(6, "steps") == 6


def test_two_batch_sizes_are_drawn_against_samples_seen(data_dir, tmp_path):
    small = fake_run(tmp_path, "a", 100, [_eval(5, 0.70), _eval(10, 0.72)], steps=(1, 2, 5), data=data_dir)
    large = fake_run(tmp_path, "b", 500, [_eval(1, 0.69), _eval(2, 0.71)], steps=(1, 2), data=data_dir,
                     scale_rule="sqrt", hp={"clip": 0})
    runs = [plot.read_run(small), plot.read_run(large)]
    assert plot.default_x(runs) == "samples"
    fig, axes = plot.draw(runs, plot.default_x(runs))
    auc_lines = {line.get_label(): line for line in axes["auc"].get_lines()}
    assert set(auc_lines) == {"deepfm bs 100 cowclip test", "deepfm bs 500 sqrt test"}
    np.testing.assert_array_equal(auc_lines["deepfm bs 100 cowclip test"].get_xdata(), [500, 1000])
    np.testing.assert_array_equal(auc_lines["deepfm bs 500 sqrt test"].get_xdata(), [500, 1000])
    loss = {line.get_label(): line for line in axes["loss"].get_lines()}
    np.testing.assert_array_equal(loss["deepfm bs 100 cowclip"].get_xdata(), [100, 200, 500])
    for name in ("ne", "calibration", "logloss", "loss", "auc"):
        assert axes[name].get_ylabel() and axes[name].get_xlabel() == "samples seen"
    # one legend for the figure, none on the panels
    assert all(ax.get_legend() is None for ax in axes.values())
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 1
    assert [t.get_text() for t in legends[0].get_texts()] == ["deepfm bs 100 cowclip", "deepfm bs 500 sqrt", "test"]
    assert plot.count_text(1500) == "1.5K" and plot.count_text(2_000_000) == "2M" and plot.count_text(500) == "500"


def test_valid_auc_and_the_bayes_line_are_drawn_when_present(data_dir, tmp_path):
    run = fake_run(tmp_path, "r", 100, [_eval(5, 0.7, valid_auc=0.71, bayes_auc=0.8, bayes_logloss=0.4),
                                        _eval(10, 0.72, valid_auc=0.73, bayes_auc=0.8, bayes_logloss=0.4)],
                   data=data_dir)
    fig, axes = plot.draw([plot.read_run(run)], "steps")
    labels = {line.get_label(): line for line in axes["auc"].get_lines()}
    np.testing.assert_array_equal(labels["deepfm bs 100 cowclip valid"].get_ydata(), [0.71, 0.73])
    assert list(labels["Bayes-optimal auc"].get_ydata()) == [0.8, 0.8]
    assert [line.get_label() for line in axes["logloss"].get_lines()][-1] == "Bayes-optimal logloss"
    np.testing.assert_array_equal(axes["ne"].get_lines()[0].get_ydata(), [0.9, 0.9])


def test_the_png_of_two_trained_runs_opens_and_is_not_blank(tmp_path):
    """Two real runs at batch sizes 256 and 512 on a synthetic set (which knows its Bayes-optimal AUC)."""
    from matplotlib.image import imread

    from dataio.synthetic import generate

    data = generate(tmp_path / "syn", rows=3000, seed=3, min_vocab=3, max_vocab=50)
    rows = json.loads((data / "meta.json").read_text())["splits"]["train"]["rows"]
    runs = []
    for bs in (256, 512):
        runs.append(str(tmp_path / f"bs{bs}"))
        result = CliRunner().invoke(train.main, ["--data", str(data), "--out", runs[-1], "--bs", str(bs),
                                                 "--max-steps", "6", "--eval-every", "2", "--log-every", "1",
                                                 "--device", "cpu", "--warmup", "0"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    png = tmp_path / "curves.png"
    result = CliRunner().invoke(plot.main, [*runs, "--out", str(png)])
    assert result.exit_code == 0, result.output
    image = imread(png)
    assert image.shape[:2] == (800, 1500)
    assert image[..., :3].std() > 0.05                     # not one flat colour
    read = [plot.read_run(r) for r in runs]
    _, axes = plot.draw(read, "samples")
    lines = {line.get_label(): line for line in axes["auc"].get_lines()}
    per_epoch = {bs: math.ceil(rows / bs) for bs in (256, 512)}
    for bs in (256, 512):
        label = next(k for k in lines if k.endswith(" test") and f"bs {bs} " in k)
        steps = [r["step"] for r in read[(256, 512).index(bs)].evals]
        expected = [(s // per_epoch[bs]) * rows + min((s % per_epoch[bs]) * bs, rows) for s in steps]
        np.testing.assert_array_equal(lines[label].get_xdata(), expected)
    assert "Bayes-optimal auc" in lines


@pytest.mark.parametrize("content,says", [
    (b'{"type": "eval", "auc": 0.7}\n', "line 1: field 'step' should be a number"),
    (b'{"type": "step", "step": 1, "loss": 0.5}\n5\n', "line 2: a JSON object was expected"),
    (b'{"type": "step", "step": 1, "loss": 0.5}\n\xff\xfe\n', "not UTF-8"),
    (b'{"type": "step", "step": 1, "loss": 0.5}\n{"type": "step"\n', "line 2: not JSON"),
    (b'{"type": "step", "step": "x", "loss": 0.5}\n', "line 1: field 'step' should be a number"),
])
def test_bad_metrics_lines_are_one_line_errors(tmp_path, content, says):
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.jsonl").write_bytes(content)
    result = CliRunner().invoke(plot.main, [str(run), "--out", str(tmp_path / "c.png")])
    assert result.exit_code == 1 and says in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "c.png").exists()


def test_out_under_a_file_is_a_one_line_error(data_dir, tmp_path):
    run = fake_run(tmp_path, "r", 100, [_eval(5, 0.7)], data=data_dir)
    blocker = tmp_path / "file"
    blocker.write_text("kept")
    result = CliRunner().invoke(plot.main, [str(run), "--out", str(blocker / "c.png")])
    assert result.exit_code == 1 and "is a file, not a directory" in result.output
    assert "Traceback" not in result.output and blocker.read_text() == "kept"


def test_epochs_without_the_datasets_size_is_a_one_line_error(tmp_path):
    run = fake_run(tmp_path, "r", 100, [_eval(5, 0.7)], data=tmp_path / "gone")
    assert plot.read_run(run).x(5, "samples") == 500          # every batch counted full
    result = CliRunner().invoke(plot.main, [str(run), "--out", str(tmp_path / "c.png"), "--x", "epochs"])
    assert result.exit_code == 1 and "--x epochs: the training rows" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "c.png").exists()
