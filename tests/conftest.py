import sys
from pathlib import Path

# the repository root, so that `engine`, `models`, `dataio` and `validate` import without install
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
