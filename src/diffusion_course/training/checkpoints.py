"""Files the course writes to its checkpoint cache: written atomically (a temporary file
beside the target, renamed into place), read with ``torch.load(..., weights_only=True)``, and
refused with a message that names the file when they are unreadable or not the course's."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

FORMAT = "diffusion-course-v1"   # every checkpoint and cache file the course writes says so


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable or was made with other settings."""


def save_atomically(obj, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it to ``path``: an
    interrupted or failed save leaves nothing half-written there (and no temporary file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_file(path: Path):
    """``torch.load`` of a cache file, weights only, on the CPU; an unreadable file raises
    ``CheckpointError`` (it is corrupt, not missing)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or unsafe content
        raise CheckpointError(f"cannot read checkpoint {path}: {e.__class__.__name__}: {e}. "
                              f"Delete it to train again.") from None


def checked(blob, path: Path) -> dict:
    """``blob`` (read from ``path``) if it is a file the course wrote (``FORMAT``)."""
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a diffusion-course checkpoint; delete it to train again")
    return blob


def read_checkpoint(path: Path) -> dict:
    """A file the course wrote (``FORMAT``), as a dict."""
    return checked(read_file(path), path)
