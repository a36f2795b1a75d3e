import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def data_root_with(marker: str, what: str) -> Path:
    """$COURSE_DATA_ROOT (else ../shared/data) if it holds ``marker``, or skip the test."""
    root = Path(os.environ.get("COURSE_DATA_ROOT", SHARED_DATA))
    if not (root / marker).exists():
        pytest.skip(f"{what} not available (set COURSE_DATA_ROOT)")
    return root


@pytest.fixture
def real_data_root() -> Path:
    """A folder holding the real MNIST test split, or skip."""
    return data_root_with("MNIST/raw/t10k-images-idx3-ubyte.gz", "real MNIST test split")


@pytest.fixture
def fsdd_root() -> Path:
    """A folder holding the Free Spoken Digit Dataset recordings, or skip."""
    return data_root_with("fsdd/recordings/0_george_0.wav", "FSDD recordings")
