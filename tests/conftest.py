import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def real_data_root() -> Path:
    """A folder holding the real MNIST test split, or skip."""
    root = Path(os.environ.get("COURSE_DATA_ROOT", SHARED_DATA))
    if not (root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("real MNIST test split not available (set COURSE_DATA_ROOT)")
    return root
