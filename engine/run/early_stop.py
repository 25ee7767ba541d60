"""Early stopping on the validation split: keep the best checkpoint, stop after N evaluations without
a better valid AUC, and report the test metrics of the best.

Layout beside the run's checkpoint/:
    best/checkpoint/   the parameters and Adam state of the evaluation with the best valid AUC as of the
                       run's last checkpoint, written atomically by engine.run.checkpoint.save_checkpoint
    best/pending/      a newer best, written at its evaluation and made best/checkpoint once the run's
                       checkpoint (which records the early-stopping state) is on disk: a kill in between
                       leaves best/ agreeing with the checkpoint a resumed run starts from (settle_best)
    best/config.json   a copy of the run's, so that `python -m engine.evaluate --run RUN/best` scores it
    early_stop.json    {"patience", "best_valid_auc", "best_step", "since_best", "last_step"} for the reader; a resumed
                       run takes the state its checkpoint recorded
"""
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.run.checkpoint import global_step_of
from engine.run.files import write_replace

BEST_DIR = "best"
PENDING = "pending"          # best/pending: a new best not yet covered by the run's checkpoint
STATE_FILE = "early_stop.json"


@dataclass
class EarlyStopping:
    patience: int                    # N of --early-stop
    best_valid_auc: float = float("-inf")
    best_step: int = -1
    since_best: int = 0              # evaluations since the best one
    last_step: int = -1              # global step of the last evaluation counted

    def observe(self, valid_auc: float, step: int) -> bool:
        """Record one evaluation. -> True when it is a new best (strictly higher valid AUC). A second
        evaluation at the same global step (an epoch's end that is also an --eval-every step) is the
        same parameters again: it counts once toward patience."""
        if step == self.last_step:
            return False
        self.last_step = step
        if valid_auc is not None and valid_auc > self.best_valid_auc:
            self.best_valid_auc, self.best_step, self.since_best = valid_auc, step, 0
            return True
        self.since_best += 1
        return False

    RECORDED = ("best_valid_auc", "best_step", "since_best", "last_step")   # what a checkpoint keeps

    def recorded(self) -> dict:
        """The state a checkpoint records (engine/run/phases.py run_state); patience comes from the settings."""
        return {k: getattr(self, k) for k in self.RECORDED}

    @classmethod
    def from_recorded(cls, patience: int, recorded: dict) -> "EarlyStopping":
        return cls(patience, **{k: recorded[k] for k in cls.RECORDED if k in recorded})

    @property
    def should_stop(self) -> bool:
        return self.since_best >= self.patience

    def save(self, run_dir: Path) -> None:
        write_replace(Path(run_dir) / STATE_FILE, json.dumps(asdict(self)))

    @classmethod
    def load_or_new(cls, run_dir: Path, patience: int, recorded: dict | None = None) -> "EarlyStopping":
        """recorded: the state the run's checkpoint holds (what a resumed run continues from); a
        checkpoint from before it recorded one falls back to early_stop.json."""
        path = Path(run_dir) / STATE_FILE
        if recorded is None and path.is_file():
            recorded = json.loads(path.read_text())
        return cls(patience) if recorded is None else cls.from_recorded(patience, recorded)


def best_dir(run_dir: Path) -> Path:
    """A run directory of its own: best/checkpoint and best/config.json."""
    path = Path(run_dir) / BEST_DIR
    path.mkdir(exist_ok=True)
    if not (path / "config.json").exists():
        write_replace(path / "config.json", (Path(run_dir) / "config.json").read_bytes())
    return path


def settle_best(run_dir: Path, best_step: int) -> None:
    """Make best/checkpoint the best that the run's checkpoint records (global step `best_step`, -1 for
    none yet): the one of best/pending, best/checkpoint and a cut swap's .tmp / .old at that step
    becomes best/checkpoint, and the others go. Called after each checkpoint and on --resume; a kill
    part way leaves the one at `best_step` under one of those names, so calling again finishes."""
    best = Path(run_dir) / BEST_DIR
    if not best.is_dir():
        return
    final = best / "checkpoint"
    candidates = [final, best / "checkpoint.tmp", best / "checkpoint.old", best / PENDING,
                  best / f"{PENDING}.tmp", best / f"{PENDING}.old"]
    match = next((c for c in candidates if c.is_dir() and global_step_of(c) == best_step), None)
    if match is None and best_step >= 0:
        return   # the recorded best is not here (removed by hand): leave best/ as it is
    for candidate in candidates[1:]:
        if candidate != match and candidate.is_dir():
            shutil.rmtree(candidate)
    if match is not None and match != final:
        if final.is_dir():
            shutil.rmtree(final)
        match.rename(final)
