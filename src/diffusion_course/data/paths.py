"""Where the course keeps what it downloads, trains and writes: the one place that decides.

    inside a checkout   the package is imported from <checkout>/src/diffusion_course (an
                        editable install, or PYTHONPATH=src): the checkout's data/,
                        checkpoints/ and build/
    installed           pip installed it into site-packages (Colab, a wheel): folders under
                        the working directory, ./data, ./checkpoints and ./build (on Colab
                        the working directory is /content)

Never inside the installed package or site-packages. Two environment variables override:
``$COURSE_DATA_ROOT`` for data (it may be read-only: CI points it at a shared copy) and
``$COURSE_CACHE`` for trained models.
"""
from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "COURSE_DATA_ROOT"
CACHE_ENV = "COURSE_CACHE"
PACKAGE_DIR = Path(__file__).resolve().parents[1]   # src/diffusion_course


def checkout_root() -> Path | None:
    """The repository this package is imported from, or None when it is installed."""
    root = PACKAGE_DIR.parents[1]
    if PACKAGE_DIR == root / "src" / "diffusion_course" and (root / "pyproject.toml").is_file():
        return root
    return None


def _base() -> Path:
    return checkout_root() or Path.cwd()


def data_dir() -> Path:
    """Downloads: ``$COURSE_DATA_ROOT``, else <checkout>/data, else ./data."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return _base() / "data"


def cache_dir() -> Path:
    """Trained models shared by chapters: ``$COURSE_CACHE``, else <checkout>/checkpoints,
    else ./checkpoints."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return _base() / "checkpoints"


def build_dir() -> Path:
    """The runner's output (executed notebooks, figures, metrics): <checkout>/build, else ./build."""
    return _base() / "build"


def describe() -> dict:
    """Where things go now, for a notebook or a bug report."""
    root = checkout_root()
    return {"mode": "checkout" if root else "installed", "checkout": str(root) if root else None,
            "data": str(data_dir()), "checkpoints": str(cache_dir()), "build": str(build_dir())}
