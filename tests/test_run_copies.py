"""A copy of a run stays a copy: a run directory copied with links (`cp -rs run snap`: symbolic links to
each file; `cp -al run snap`: hard links) and trained on with --resume leaves the other one byte for byte
as it was, because every file of a run directory is written by replace (engine/run/files.py).
"""
import json
import os
import subprocess

import pytest
from click.testing import CliRunner

from engine import train

RUN = ["--bs", "256", "--epoch", "2", "--eval-every", "2", "--early-stop", "5", "--checkpoint-every", "3",
       "--device", "cpu", "--model", "fm", "--sparse_embed_dim", "4", "--warmup", "0"]


def trained(args):
    result = CliRunner().invoke(train.main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def contents(root) -> dict:
    """Every file under `root` (through links) -> its bytes, and every name -> what kind of entry it is."""
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    kinds = {str(p.relative_to(root)): "link" if p.is_symlink() else "dir" if p.is_dir() else "file"
             for p in sorted(root.rglob("*"))}
    return {"files": files, "kinds": kinds}


@pytest.fixture
def run_at_step_8(with_valid, tmp_path):
    """A run stopped by --max-steps 8 in its first epoch (12 steps): checkpoint, best/, early_stop.json,
    metrics.jsonl, final_metrics.json and a lock file, all there to be linked."""
    run = tmp_path / "run"
    trained(["--data", with_valid, "--out", run, "--max-steps", "8", *RUN])
    assert (run / "best" / "checkpoint").is_dir() and (run / "early_stop.json").is_file()
    return run.resolve()


@pytest.mark.parametrize("flags", ["-rs", "-al"], ids=["symbolic links", "hard links"])
def test_resuming_a_linked_copy_leaves_the_original_byte_for_byte(run_at_step_8, flags):
    run = run_at_step_8
    snap = run.parent / "snap"
    subprocess.run(["cp", flags, str(run), str(snap)], check=True)
    before = contents(run)
    trained(["--resume", "--out", snap, "--max-steps", "16"])
    assert contents(run) == before
    final = json.loads((snap / "final_metrics.json").read_text())
    assert final["steps"] == 16 and json.loads((run / "final_metrics.json").read_text())["steps"] == 8
    for name in ("config.json", "metrics.jsonl", "final_metrics.json", "early_stop.json", ".lock"):
        path = snap / name    # each file the resumed run wrote is its own now
        assert not path.is_symlink() and os.stat(path).st_nlink == 1, name


def test_resuming_the_original_leaves_a_hard_linked_copy_byte_for_byte(run_at_step_8):
    run = run_at_step_8
    snap = run.parent / "snap"
    subprocess.run(["cp", "-al", str(run), str(snap)], check=True)
    before = contents(snap)
    trained(["--resume", "--out", run, "--max-steps", "16"])
    assert contents(snap) == before


def test_write_replace_never_writes_through_a_link(tmp_path):
    from engine.run.files import write_replace

    target = tmp_path / "target.json"
    target.write_text("original")
    soft, hard = tmp_path / "soft.json", tmp_path / "hard.json"
    soft.symlink_to(target)
    os.link(target, hard)
    write_replace(soft, "new")
    write_replace(hard, "newer")
    assert target.read_text() == "original"
    assert soft.read_text() == "new" and not soft.is_symlink()
    assert hard.read_text() == "newer" and os.stat(hard).st_nlink == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.json", "soft.json", "target.json"]   # no temp left


def test_append_line_first_makes_a_shared_file_private(tmp_path):
    from engine.run.files import append_line, own

    target = tmp_path / "metrics.jsonl"
    target.write_text("1\n")
    link = tmp_path / "copy.jsonl"
    os.link(target, link)
    append_line(link, "2")
    assert target.read_text() == "1\n" and link.read_text() == "1\n2\n"
    assert not own(link)            # already private: nothing to do
    append_line(link, "3")
    assert link.read_text() == "1\n2\n3\n" and target.read_text() == "1\n"
