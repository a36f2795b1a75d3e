"""Downloading one file safely: torchvision's downloader (with its progress bar) into a
temporary folder beside the destination, the checksum checked, then one atomic rename. An
interrupted, refused or corrupt download leaves nothing behind that could look complete.

The data root is ``paths.data_dir()``: ``$COURSE_DATA_ROOT`` if set (CI points it at a
read-only shared copy), else the checkout's ``data/`` folder, else ``./data``.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import urllib.error
from contextlib import contextmanager
from pathlib import Path

from .paths import DATA_ENV


class DataNotFoundError(FileNotFoundError):
    """A data file is missing and could not be downloaded."""


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def _socket_timeout(seconds: float):
    """torchvision's downloader sets no timeout of its own: a dead network must not hang a chapter."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def download_file(url: str, dest: Path, md5: str | None = None, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` (``torchvision.datasets.utils.download_url``, progress bar
    included) by way of a temporary folder beside it; with ``md5``, a file that does not match
    raises ``ValueError`` and is deleted. Network errors raise ``urllib.error.URLError`` or
    ``OSError``."""
    from torchvision.datasets.utils import download_url

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        with _socket_timeout(timeout):
            download_url(url, str(work), dest.name)
        got = md5sum(work / dest.name)
        if md5 is not None and got != md5:
            raise ValueError(f"md5 {got} != expected {md5}")
        os.replace(work / dest.name, dest)
        return dest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fetch(dest: Path, urls: list[str], md5: str, download: bool = True, what: str = "file",
          timeout: float = 30.0) -> Path:
    """Return ``dest`` after checking its md5, downloading it from the first working URL when
    it is missing (and ``download``). A file that is there with another checksum is
    corrupt, not missing: ``ValueError`` names it and says what to do."""
    dest = Path(dest)
    if dest.exists():
        got = md5sum(dest)
        if got != md5:
            remedy = (f"Delete it and run again to download it from {urls[0]}" if urls else
                      "Delete it (a good copy, or the downloaded .gz beside it, is used then)")
            raise ValueError(f"{dest} is corrupt: md5 {got}, expected {md5}. {remedy}")
        return dest
    if not download:
        raise DataNotFoundError(missing_message(dest, urls, md5, what, "downloads are disabled"))
    errors = []
    for url in urls:
        try:
            return download_file(url, dest, md5, timeout)
        except PermissionError as e:      # a read-only data root
            raise DataNotFoundError(missing_message(dest, urls, md5, what, f"cannot write: {e}")) from e
        except (urllib.error.URLError, OSError, ValueError, RuntimeError) as e:
            errors.append(f"{url}: {e}")
    raise DataNotFoundError(missing_message(dest, urls, md5, what, "; ".join(errors)))


def missing_message(dest: Path, urls: list[str], md5: str | None, what: str, reason: str) -> str:
    checksum = f" (md5 {md5})" if md5 else ""
    return (
        f"{what} not found at {dest} and could not be downloaded ({reason}).\n"
        f"Download it from {' or '.join(urls)}{checksum} and put it at {dest}, "
        f"or set ${DATA_ENV} to a folder that already holds it."
    )

