import sys
from pathlib import Path

# the repository root, so that `engine`, `models`, `dataio` and `validate` import without install
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
