"""Where data live, and downloading one file safely (checksum first, then an atomic rename).

The data root is ``paths.data_dir()``: ``$COURSE_DATA_ROOT`` if set (CI points it at a
read-only shared copy), else the checkout's ``data/`` folder, else ``./data``.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .paths import DATA_ENV, data_dir


class DataNotFoundError(FileNotFoundError):
    """A data file is missing and could not be downloaded."""


def data_root() -> Path:
    return data_dir()


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(dest: Path, urls: list[str], md5: str, download: bool = True, what: str = "file",
          timeout: float = 30.0) -> Path:
    """Return ``dest`` after checking its md5, downloading it from the first working URL.

    A download goes to a temporary file beside ``dest`` and is renamed into place only
    after its checksum matches, so an interrupted or corrupt download never looks complete.
    """
    dest = Path(dest)
    if dest.exists():
        got = md5sum(dest)
        if got != md5:
            remedy = (f"Delete it and run again to download it from {urls[0]}" if urls else
                      "Delete it (a good copy, or the downloaded .gz beside it, is used then)")
            raise ValueError(f"{dest} is corrupt: md5 {got}, expected {md5}. {remedy}")
        return dest
    if not download:
        raise DataNotFoundError(_missing_message(dest, urls, md5, what, "downloads are disabled"))
    errors = []
    for url in urls:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
        except OSError as e:  # read-only data root
            raise DataNotFoundError(_missing_message(dest, urls, md5, what, f"cannot write: {e}")) from e
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
                while block := r.read(1 << 20):
                    out.write(block)
            got = md5sum(Path(tmp))
            if got != md5:
                raise ValueError(f"md5 {got} != expected {md5}")
            os.replace(tmp, dest)
            return dest
        except (urllib.error.URLError, OSError, ValueError) as e:
            errors.append(f"{url}: {e}")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise DataNotFoundError(_missing_message(dest, urls, md5, what, "; ".join(errors)))


def _missing_message(dest: Path, urls: list[str], md5: str, what: str, reason: str) -> str:
    return (
        f"{what} not found at {dest} and could not be downloaded ({reason}).\n"
        f"Download it from {' or '.join(urls)} (md5 {md5}) and put it at {dest}, "
        f"or set ${DATA_ENV} to a folder that already holds it."
    )
