"""Early stopping on the validation split: keep the best checkpoint, stop after N evaluations without
a better valid AUC, and report the test metrics of the best.

Layout beside the run's checkpoint/:
    best/checkpoint/   the parameters and Adam state of the evaluation with the best valid AUC, written
                       atomically by the same engine.run.checkpoint.save_checkpoint
    best/config.json   a copy of the run's, so that `python -m engine.evaluate --run RUN/best` scores it
    early_stop.json    {"patience", "best_valid_auc", "best_step", "since_best"}: survives --resume
"""
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

BEST_DIR = "best"
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

    @property
    def should_stop(self) -> bool:
        return self.since_best >= self.patience

    def save(self, run_dir: Path) -> None:
        tmp = Path(run_dir) / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(Path(run_dir) / STATE_FILE)

    @classmethod
    def load_or_new(cls, run_dir: Path, patience: int) -> "EarlyStopping":
        path = Path(run_dir) / STATE_FILE
        if path.is_file():
            saved = json.loads(path.read_text())
            return cls(**{**saved, "patience": patience})
        return cls(patience)


def best_dir(run_dir: Path) -> Path:
    """A run directory of its own: best/checkpoint and best/config.json."""
    path = Path(run_dir) / BEST_DIR
    path.mkdir(exist_ok=True)
    if not (path / "config.json").exists():
        shutil.copyfile(Path(run_dir) / "config.json", path / "config.json")
    return path
