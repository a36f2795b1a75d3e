"""The Free Spoken Digit Dataset (FSDD, v1.0.10): 3,000 mono 8 kHz 16-bit WAV files,
6 speakers x 10 digits x 50 takes, CC BY-SA 4.0 (github.com/Jakobovski/free-spoken-digit-dataset).

Files live under ``<data root>/fsdd/recordings/{digit}_{speaker}_{take}.wav``. The standard
split keeps takes 0-4 of every (speaker, digit) as the test set (300 clips) and trains on
takes 5-49 (2,700 clips).

Checksums. The release archive's own checksum is not pinned (it was not available when this
was written, offline). What is pinned and verified is ``RECORDINGS_SHA256``: a manifest hash
of the 3,000 recordings themselves (sha256 over the sorted file names, each followed by the
sha256 of its bytes; see ``manifest_sha256``). It is checked
  * on every first load of a folder in a process (about 0.1 s for 27 MB), so a damaged or
    incomplete local copy is refused, and
  * after a download, on the files extracted from the archive, before they are moved into
    place: a corrupt or different archive never looks like a complete data set.

Clips are 0.14-2.3 s long (1,148-18,262 samples; median 3,358); 99.4% fit in 8,192 samples.
``load_fsdd`` trims leading and trailing silence, centres what is left in a fixed window
(cropping the centre of the few longer clips) and normalises each clip's level.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import urllib.error
import wave
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .download import DataNotFoundError, download_file
from .paths import DATA_ENV, data_dir

SAMPLE_RATE = 8000
VERSION = "1.0.10"
URL = f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v{VERSION}.zip"
ARCHIVE_PREFIX = f"free-spoken-digit-dataset-{VERSION}/recordings/"
N_FILES = 3000
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
TEST_TAKES = range(0, 5)  # takes 0-4 of every (speaker, digit) are the standard test split
# sha256 manifest of the 3,000 v1.0.10 recordings (see the module docstring).
RECORDINGS_SHA256 = "a2e8a660492f28d9eed6270b290d26cbc5c81d6077ce87d3c0ad5adf4d4ee696"
SPLITS = ("train", "test", "all")
PLACEMENTS = ("centre", "start")
NORMALISATIONS = ("peak", "rms", "none")
_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


def recordings_dir(root: Path | None = None) -> Path:
    return Path(root if root is not None else data_dir()) / "fsdd" / "recordings"


def manifest_sha256(folder: Path) -> str:
    """sha256 over the sorted .wav names, each followed by a NUL and the sha256 of its bytes."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.wav"), key=lambda p: p.name):
        digest.update(path.name.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _missing_message(folder: Path, reason: str) -> str:
    return (f"Free Spoken Digit Dataset v{VERSION} not found at {folder} and could not be "
            f"downloaded ({reason}).\nDownload {URL}, unzip it and put the 3,000 .wav files of "
            f"its recordings/ folder at {folder}, or set ${DATA_ENV} to a folder that holds "
            f"fsdd/recordings/.")


@lru_cache(maxsize=8)
def _verified(folder: str, mtime_ns: int) -> None:
    """Check the manifest once per folder (and modification time) per process."""
    got = manifest_sha256(Path(folder))
    if got != RECORDINGS_SHA256:
        n = len(list(Path(folder).glob("*.wav")))
        raise ValueError(f"{folder} holds {n} .wav files whose manifest sha256 is {got}, expected "
                         f"{RECORDINGS_SHA256} (the 3,000 files of FSDD v{VERSION}). Delete the "
                         f"folder and run again to download {URL}")


def fsdd_files(root: Path | None = None, download: bool = True, timeout: float = 60.0) -> Path:
    """The verified ``recordings`` folder, downloaded from the pinned release if absent."""
    folder = recordings_dir(root)
    if folder.is_dir() and any(folder.glob("*.wav")):
        _verified(str(folder), folder.stat().st_mtime_ns)
        return folder
    if not download:
        raise DataNotFoundError(_missing_message(folder, "downloads are disabled"))
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".fsdd-download-"))
    except OSError as e:  # read-only data root
        raise DataNotFoundError(_missing_message(folder, f"cannot write: {e}")) from e
    try:
        archive = download_file(URL, work / "fsdd.zip", timeout=timeout)
        extracted = work / "recordings"
        extracted.mkdir()
        with zipfile.ZipFile(archive) as z:
            for member in z.namelist():
                name = member[len(ARCHIVE_PREFIX):]
                if member.startswith(ARCHIVE_PREFIX) and _NAME.match(name):
                    (extracted / name).write_bytes(z.read(member))
        _verified.__wrapped__(str(extracted), 0)  # the manifest check, before anything moves
        os.replace(extracted, folder)
        return folder
    except (urllib.error.URLError, OSError, ValueError, RuntimeError, zipfile.BadZipFile) as e:
        raise DataNotFoundError(_missing_message(folder, f"{e.__class__.__name__}: {e}")) from e
    finally:
        shutil.rmtree(work, ignore_errors=True)


def read_wav(path: Path) -> np.ndarray:
    """A 16-bit mono WAV file as float32 in [-1, 1) (int16 / 32768)."""
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit mono, got {w.getnchannels()} channel(s) of "
                             f"{8 * w.getsampwidth()} bits")
        frames = w.readframes(w.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0


def speech_bounds(x: np.ndarray, frame: int = 64, threshold: float = 0.05) -> tuple[int, int]:
    """[start, end) of the part of ``x`` between the first and last frame of ``frame``
    samples whose RMS exceeds ``threshold`` times the loudest frame's RMS (silence trimming)."""
    n = -(-len(x) // frame)  # frames, the last one zero-padded
    if n == 0:
        return 0, len(x)
    padded = np.zeros(n * frame)
    padded[: len(x)] = x
    rms = np.sqrt((padded.reshape(n, frame) ** 2).mean(1))
    loud = np.flatnonzero(rms > threshold * rms.max()) if rms.max() > 0 else np.arange(n)
    return int(loud[0]) * frame, min(len(x), (int(loud[-1]) + 1) * frame)


def fit_length(x: np.ndarray, length: int, placement: str = "centre") -> np.ndarray:
    """Crop or zero-pad ``x`` to ``length`` samples.

    ``centre``: trim leading and trailing silence (``speech_bounds``), then put the middle
    of what is left in the middle of the window (a longer clip keeps its central part).
    ``start``: the raw clip from sample 0, cut or zero-padded at the end.
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}; allowed: {', '.join(PLACEMENTS)}")
    if not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive int, got {length!r}")
    x = np.asarray(x, dtype=np.float32)
    if placement == "start":
        out = np.zeros(length, np.float32)
        out[: min(length, len(x))] = x[:length]
        return out
    a, b = speech_bounds(x)
    x = x[a:b]
    if len(x) > length:
        cut = (len(x) - length) // 2
        return x[cut:cut + length].copy()
    out = np.zeros(length, np.float32)
    off = (length - len(x)) // 2
    out[off:off + len(x)] = x
    return out


def normalise(x: np.ndarray, how: str = "peak", level: float = 0.95) -> np.ndarray:
    """Scale a clip so its peak |x| (``peak``) or its RMS over the non-silent part (``rms``)
    equals ``level``; ``rms`` then clips to [-1, 1]. A silent clip stays silent."""
    if how not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {how!r}; allowed: {', '.join(NORMALISATIONS)}")
    x = np.asarray(x, dtype=np.float32)
    if how == "none":
        return x.copy()
    if how == "peak":
        ref = np.abs(x).max()
    else:
        a, b = speech_bounds(x)
        ref = np.sqrt(np.mean(x[a:b].astype(np.float64) ** 2)) if b > a else 0.0
    if ref == 0:
        return x.copy()
    out = x * (level / ref)
    return np.clip(out, -1, 1) if how == "rms" else out


@dataclass
class FSDD:
    """Clips [N, length] float32, digits [N] int64, speaker index [N] (into ``SPEAKERS``),
    take [N], and the unpadded length of every clip in samples [N]."""

    audio: torch.Tensor
    labels: torch.Tensor
    speakers: torch.Tensor
    takes: torch.Tensor
    lengths: torch.Tensor
    sample_rate: int = SAMPLE_RATE

    def __len__(self) -> int:
        return len(self.labels)


def parse_name(name: str) -> tuple[int, str, int]:
    """``"3_theo_17.wav"`` -> (3, "theo", 17)."""
    m = _NAME.match(name)
    if not m:
        raise ValueError(f"{name!r} is not an FSDD file name (digit_speaker_take.wav)")
    return int(m.group(1)), m.group(2), int(m.group(3))


def load_fsdd(split: str = "train", length: int = 8192, placement: str = "centre",
              normalisation: str = "peak", root: Path | None = None,
              download: bool = True) -> FSDD:
    """One split of FSDD as fixed-length clips (see ``fit_length`` and ``normalise``),
    sorted by file name. ``split``: ``train`` (takes 5-49), ``test`` (takes 0-4) or ``all``.
    Decoding all 3,000 files takes well under a second, so nothing is cached."""
    if split not in SPLITS:
        raise ValueError(f"unknown FSDD split {split!r}; allowed: {', '.join(SPLITS)}")
    fit_length(np.zeros(1), length, placement)   # argument checks before any I/O
    normalise(np.zeros(1), normalisation)
    folder = fsdd_files(root, download)
    clips, labels, speakers, takes, lengths = [], [], [], [], []
    for path in sorted(folder.glob("*.wav"), key=lambda p: p.name):
        digit, speaker, take = parse_name(path.name)
        if split != "all" and (take in TEST_TAKES) != (split == "test"):
            continue
        x = read_wav(path)
        clips.append(normalise(fit_length(x, length, placement), normalisation))
        labels.append(digit)
        speakers.append(SPEAKERS.index(speaker))
        takes.append(take)
        lengths.append(len(x))
    as_long = lambda v: torch.tensor(v, dtype=torch.long)
    return FSDD(torch.from_numpy(np.stack(clips)), as_long(labels), as_long(speakers),
                as_long(takes), as_long(lengths))


def available(root: Path | None = None) -> bool:
    """True if a verified copy of the recordings is on disk (nothing is downloaded)."""
    try:
        fsdd_files(root, download=False)
        return True
    except (FileNotFoundError, ValueError):
        return False
