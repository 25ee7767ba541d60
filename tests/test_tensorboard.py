"""--tensorboard: metrics.jsonl records as TensorBoard event files, read back here with a parser of the
event-file format (length, masked CRC32C of the length, Event protobuf, masked CRC32C of the data),
which checks every CRC."""
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("tensorboardX")

from engine import train  # noqa: E402
from engine.run.tensorboard import TensorBoardWriter  # noqa: E402


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)   # Castagnoli polynomial, reflected
        table.append(crc)
    return table


CRC_TABLE = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC32C, rotated right by 15 bits plus 0xa282ead8 (mod 2^32)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_the_crc_is_crc32c():
    crc = masked_crc32c(b"123456789")       # the check value of CRC32C is 0xE3069283, masked below
    raw = ((crc - 0xA282EAD8) & 0xFFFFFFFF)
    assert ((raw << 15) | (raw >> 17)) & 0xFFFFFFFF == 0xE3069283


def read_events(log_dir) -> dict:
    """-> {tag: [(step, value or histogram dict)]} of every event file in log_dir, in file order."""
    from tensorboardX.proto.event_pb2 import Event

    tags = {}
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            header = data[at:at + 8]
            (length,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", data[at + 8:at + 12])[0] == masked_crc32c(header)
            body = data[at + 12:at + 12 + length]
            assert struct.unpack("<I", data[at + 12 + length:at + 16 + length])[0] == masked_crc32c(body)
            at += 16 + length
            event = Event.FromString(body)
            for value in event.summary.value:
                if value.HasField("histo"):
                    h = value.histo
                    item = {"num": h.num, "counts": list(h.bucket), "limits": list(h.bucket_limit)}
                else:
                    item = value.simple_value
                tags.setdefault(value.tag, []).append((event.step, item))
    return tags


def test_records_become_scalars_and_histograms(tmp_path):
    writer = TensorBoardWriter(tmp_path / "tb")
    audit = {"rows": 4, "rows_clipped": 1,
             "histograms": {"scale": {"min": 0.5, "max": 1.0, "num": 4, "sum": 3.5, "sum_squares": 3.25,
                                      "limits": [0.5, 1.0], "counts": [1, 3]}}}
    writer.write({"type": "step", "step": 3, "loss": 0.25, "running_loss": 0.5, "lr": 1e-3, "lr_embed": 1e-4,
                  "samples_per_s": 10.0, "norm.weight.embed.table": 2.5, "audit.embed.table": audit})
    writer.write({"type": "eval", "step": 4, "auc": 0.75, "logloss": 0.4, "ne": 0.9, "calibration": 1.1,
                  "valid_auc": 0.7, "bayes_auc": 0.8, "auc_undefined": "x"})
    writer.write({"type": "eval", "step": 5, "auc": None, "logloss": 0.4})      # an undefined AUC is skipped
    writer.close()
    tags = read_events(tmp_path / "tb")
    assert tags["train/loss"] == [(3, 0.25)] and tags["train/running_loss"] == [(3, 0.5)]
    assert tags["norm/weight/embed.table"] == [(3, 2.5)]
    assert tags["audit/embed.table/rows_clipped_fraction"] == [(3, 0.25)]
    (step, histo), = tags["audit/embed.table/scale"]
    assert step == 3 and histo["num"] == 4 and histo["counts"] == [1, 3]
    assert tags["test/auc"] == [(4, 0.75)] and tags["valid/auc"] == [(4, pytest.approx(0.7))]
    assert tags["bayes/auc"] == [(4, pytest.approx(0.8))] and tags["test/calibration"] == [(4, pytest.approx(1.1))]
    assert tags["test/logloss"] == [(4, pytest.approx(0.4)), (5, pytest.approx(0.4))]


def test_train_writes_what_metrics_jsonl_records(tmp_path):
    from dataio.synthetic import generate

    data = generate(tmp_path / "syn", rows=3000, seed=4, min_vocab=3, max_vocab=50)
    out, tb = tmp_path / "run", tmp_path / "tb"
    result = CliRunner().invoke(train.main, ["--data", str(data), "--out", str(out), "--bs", "512",
                                             "--max-steps", "4", "--eval-every", "2", "--log-every", "1", "--log",
                                             "--audit", "--tensorboard", str(tb), "--device", "cpu",
                                             "--warmup", "0"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    tags = read_events(tb)
    steps = [r for r in records if r["type"] == "step"]
    evals = [r for r in records if r["type"] == "eval"]
    assert [s for s, _ in tags["train/loss"]] == [r["step"] for r in steps] == [1, 2, 3, 4]
    np.testing.assert_allclose([v for _, v in tags["train/loss"]], [r["loss"] for r in steps], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in tags["test/auc"]], [r["auc"] for r in evals], rtol=1e-6)
    assert [s for s, _ in tags["test/auc"]] == [r["step"] for r in evals]
    norm = "norm/grad/embed.table"
    np.testing.assert_allclose([v for _, v in tags[norm]], [r["norm.grad.embed.table"] for r in steps], rtol=1e-6)
    (_, histo), *_ = tags["audit/embed.table/scale"]
    assert histo["num"] == steps[0]["audit.embed.table"]["rows"] > 0
    assert sum(histo["counts"]) == histo["num"]


def test_missing_tensorboardx_is_a_one_line_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboardx(name, *args, **kwargs):
        if name.startswith("tensorboardX"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboardx)
    from engine.run.errors import TrainingError

    with pytest.raises(TrainingError, match=r'pip install -e "\.\[tensorboard\]"'):
        TensorBoardWriter(tmp_path / "tb")


def test_tensorboard_under_a_file_stops_before_the_run_starts(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("kept")
    result = CliRunner().invoke(train.main, ["--out", str(tmp_path / "run"), "--tensorboard", str(blocker / "tb"),
                                             "--device", "cpu"])
    assert result.exit_code == 1 and "is a file, not a directory" in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists() and blocker.read_text() == "kept"


def test_a_resumed_run_purges_the_events_after_its_checkpoint(tmp_path):
    """TensorBoard drops the events past a SessionLog START at step s: the resumed run writes one at its step."""
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    from engine.run.tensorboard import open_tensorboard

    assert open_tensorboard(tmp_path / "tb", 7, writes=False) is None        # MPI ranks other than 0
    writer = open_tensorboard(tmp_path / "tb", 7, writes=True)
    writer.write({"type": "step", "step": 8, "loss": 0.5})
    writer.close()
    starts = []
    for path in (tmp_path / "tb").glob("events.out.tfevents.*"):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = Event.FromString(data[at + 12:at + 12 + length])
            at += 16 + length
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                starts.append(event.step)
    assert starts == [7]
    assert read_events(tmp_path / "tb")["train/loss"] == [(8, 0.5)]
