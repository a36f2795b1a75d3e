import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def data_root_with(*markers: str, what: str) -> Path:
    """$COURSE_DATA_ROOT (else ../shared/data) if it holds every one of ``markers`` (a marker
    may name alternatives, "a|b"), or skip the test."""
    root = Path(os.environ.get("COURSE_DATA_ROOT", SHARED_DATA))
    if not all(any((root / m).exists() for m in marker.split("|")) for marker in markers):
        pytest.skip(f"{what} not available (set COURSE_DATA_ROOT)")
    return root


MNIST_FILES = [f"MNIST/raw/{name}|MNIST/raw/{name}.gz" for name in
               ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-images-idx3-ubyte",
                "train-labels-idx1-ubyte")]


@pytest.fixture
def real_data_root() -> Path:
    """A folder holding both real MNIST splits (gzipped or extracted), or skip."""
    return data_root_with(*MNIST_FILES, what="real MNIST (both splits)")


@pytest.fixture
def fsdd_root() -> Path:
    """A folder holding the Free Spoken Digit Dataset recordings, or skip."""
    return data_root_with("fsdd/recordings/0_george_0.wav", what="FSDD recordings")
