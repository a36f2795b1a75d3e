"""CIFAR-10 (Krizhevsky 2009) for the `gpu` profile of chapter 14, and a small synthetic colour
set that stands in for it in the `ci` and `cpu` profiles.

The loader reads the official "python version" archive ``cifar-10-python.tar.gz`` (163 MiB,
md5 pinned below) from ``<data root>/``, or the folder ``<data root>/cifar-10-batches-py/``
that extracting it leaves: exactly where torchvision puts both, so an existing torchvision
download is reused. The extracted folder is used when all its needed files are there, each
checked against torchvision's per-file md5; else the archive (checked, downloaded if absent
and allowed) is read in place, without extracting it.

The batches are Python pickles. Unpickling can run code, so they are only unpickled after
their checksum matched, and then by an unpickler that accepts nothing but the numpy arrays
and builtin containers a CIFAR batch holds.
"""
from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from .download import DataNotFoundError, fetch, md5sum
from .paths import DATA_ENV, data_dir

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"   # the official archive (as torchvision pins it)
FOLDER = "cifar-10-batches-py"                     # what the archive extracts to
# Per split, its batch files and their md5s (torchvision's pins, for an extracted copy).
BATCHES = {
    "train": [("data_batch_1", "c99cafc152244af753f735de768cd75f"),
              ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
              ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
              ("data_batch_4", "634d18415352ddfa80567beed471001a"),
              ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb")],
    "test": [("test_batch", "40351d587109b95175f43aff81a1287e")],
}
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# ---------------------------------------------------------------------------------------
# Reading the pickled batches
# ---------------------------------------------------------------------------------------
class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR batch and refuses every other global (no code can run)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("_codecs", "encode")}   # how Python 3 writes bytes at pickle protocols < 3

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"a CIFAR batch holds only numpy arrays and lists; "
                                         f"refusing the global {module}.{name}")
        return super().find_class(module, name)


def read_batch(blob: bytes, where: str = "batch") -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 3, 32, 32], labels int64 [N]) from one pickled batch: a dict whose
    b"data" is uint8 [N, 3072], each row the 1024 red, then green, then blue values of a
    32x32 image in row-major order, and whose b"labels" lists the class indices."""
    try:
        batch = _BatchUnpickler(io.BytesIO(blob), encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as e:  # not a pickle, not a dict, missing keys, refused globals
        raise ValueError(f"{where} is not a CIFAR-10 batch ({e.__class__.__name__}: {e})") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise ValueError(f"{where} is not a CIFAR-10 batch: data {data.shape}, {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), labels


def _read_archive(path: Path, names: list[str]) -> dict[str, bytes]:
    """The raw bytes of the members FOLDER/<name> of the archive, in one pass over it."""
    wanted, found = {f"{FOLDER}/{n}": n for n in names}, {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    found[wanted[member.name]] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ValueError(f"{path} is not a readable CIFAR-10 archive ({e.__class__.__name__}: {e}). "
                         f"Delete it and download {URL} again") from None
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(f'{FOLDER}/{n}' for n in missing)}; it is not "
                         f"the CIFAR-10 python archive. Delete it and download {URL} again")
    return found


def _missing_message(root: Path, reason: str) -> str:
    return (f"CIFAR-10 not found under {root} and could not be downloaded ({reason}).\n"
            f"Download {URL} (md5 {ARCHIVE_MD5}, 163 MiB) and put it at {root / ARCHIVE} "
            f"(it is read without extracting; an extracted {FOLDER}/ folder there works too), "
            f"or set ${DATA_ENV} to a folder that already holds it.")


def cifar_batches(split: str, root: Path | None = None, download: bool = True) -> dict[str, bytes]:
    """The raw bytes of every batch file of ``split``, each one checked: from the extracted
    folder if it holds them all (per-file md5), else from the archive (its md5; downloaded
    if absent and ``download``). A file that fails its checksum raises ``ValueError`` naming
    it: it is corrupt, not missing."""
    if split not in BATCHES:
        raise ValueError(f"unknown CIFAR-10 split {split!r}; allowed: {', '.join(BATCHES)}")
    root = Path(root if root is not None else data_dir())
    folder = root / FOLDER
    if all((folder / name).is_file() for name, _ in BATCHES[split]):
        blobs = {}
        for name, md5 in BATCHES[split]:
            got = md5sum(folder / name)
            if got != md5:
                raise ValueError(f"{folder / name} is corrupt: md5 {got}, expected {md5}. Delete the "
                                 f"folder {folder} to use (or download) the archive instead")
            blobs[name] = (folder / name).read_bytes()
        return blobs
    if not (root / ARCHIVE).exists() and not download:
        raise DataNotFoundError(_missing_message(root, "downloads are disabled"))
    try:
        archive = fetch(root / ARCHIVE, [URL], ARCHIVE_MD5, download, "CIFAR-10 archive", timeout=60.0)
    except DataNotFoundError as e:  # the download failed: fetch's message says why
        raise DataNotFoundError(f"{e}\nAn extracted {FOLDER}/ folder in {root} is used too.") from None
    return _read_archive(archive, [name for name, _ in BATCHES[split]])


def load_cifar10(split: str = "train", n: int | None = None, root: Path | None = None,
                 download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 [N, 3, 32, 32] scaled to [-1, 1] (byte / 127.5 - 1) and int64 labels
    [N] (indices into ``CLASSES``), in the files' order: train = batches 1-5 (50,000 images),
    test = 10,000. ``n`` keeps the first n."""
    blobs = cifar_batches(split, root, download)
    parts = [read_batch(blobs[name], f"{FOLDER}/{name}") for name, _ in BATCHES[split]]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(images):
            raise ValueError(f"n must be an int in 1..{len(images)} for the {split} split, got {n!r}")
        images, labels = images[:n], labels[:n]
    x = torch.from_numpy(images.copy()).float().div_(127.5).sub_(1.0)
    return x, torch.from_numpy(labels.copy())


def available(split: str = "train", root: Path | None = None) -> bool:
    """True if the files of ``split`` are on disk (nothing is downloaded); a corrupt one raises."""
    try:
        cifar_batches(split, root, download=False)
        return True
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------------------------------
# A synthetic stand-in for the ci and cpu profiles
# ---------------------------------------------------------------------------------------
SYNTHETIC_CLASSES = ("square", "disc", "triangle", "ring")
# Saturated colours for the shapes (RGB in [0, 1]); the background is a dim colour gradient.
PALETTE = torch.tensor([[0.90, 0.15, 0.15], [0.15, 0.75, 0.20], [0.20, 0.35, 0.95],
                        [0.95, 0.85, 0.15], [0.85, 0.25, 0.85], [0.15, 0.85, 0.85]])


def synthetic_colour_set(n: int, seed: int = 0, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """SYNTHETIC data, not CIFAR: n colour images [n, 3, size, size] in [-1, 1] and labels [n]
    (indices into ``SYNTHETIC_CLASSES``): one filled shape per image, the class, in one of six
    colours, at a random place and size, on a dim vertical gradient of a random colour.
    Deterministic: the same (n, seed) gives the same images, and the first k of n images are
    those of (k, seed) too. Made in milliseconds, so the chapter's `ci` and `cpu` profiles
    can train a colour DDPM without downloading anything."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    images, labels = torch.empty(n, 3, size, size), torch.empty(n, dtype=torch.long)
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    for i in range(n):   # one generator per image: image i does not depend on n
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        label = int(torch.randint(len(SYNTHETIC_CLASSES), (1,), generator=g))
        colour = PALETTE[int(torch.randint(len(PALETTE), (1,), generator=g))]
        top, bottom = 0.35 * torch.rand(3, generator=g), 0.35 * torch.rand(3, generator=g)
        r = size * (0.18 + 0.14 * float(torch.rand(1, generator=g)))         # half-width of the shape
        cy, cx = (r + (size - 2 * r) * torch.rand(2, generator=g)).tolist()  # centre, shape inside
        dy, dx = yy - cy, xx - cx
        inside = {
            "square": (dy.abs() <= r) & (dx.abs() <= r),
            "disc": dy**2 + dx**2 <= r**2,
            "triangle": (dy <= r) & (dy >= -r) & (dx.abs() <= (dy + r) / 2),   # apex up
            "ring": (dy**2 + dx**2 <= r**2) & (dy**2 + dx**2 >= (0.55 * r) ** 2),
        }[SYNTHETIC_CLASSES[label]]
        mix = yy / size                                                      # 0 at the top, 1 at the bottom
        background = (1 - mix) * top[:, None, None] + mix * bottom[:, None, None]
        images[i] = torch.where(inside, colour[:, None, None], background)
        labels[i] = label
    return images * 2 - 1, labels


# ---------------------------------------------------------------------------------------
# The colour data set of a profile: CIFAR-10 or the synthetic shapes
# ---------------------------------------------------------------------------------------
COLOUR_DATA = ("synthetic", "cifar10")


# The synthetic set's splits: seeds far from the chapter's, sizes that make floors at N up to
# 5,000 possible. CIFAR-10's are its own train (50,000) and test (10,000) files.
SYNTHETIC_SPLITS = {"train": {"n": 10_000, "seed": 1_000}, "test": {"n": 5_000, "seed": 2_000}}


def num_classes(data: str) -> int:
    check_colour_data(data)
    return len(SYNTHETIC_CLASSES) if data == "synthetic" else len(CLASSES)


def check_colour_data(data: str) -> None:
    if data not in COLOUR_DATA:
        raise ValueError(f"unknown colour data {data!r}; allowed: {', '.join(COLOUR_DATA)}")


def colour_data(data: str, split: str = "train", n: int | None = None,
                download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [N, 3, 32, 32] in [-1, 1] and labels [N] of ``split`` ("train" or "test"),
    the first ``n``. Synthetic: ``cifar.synthetic_colour_set`` with the split's seed (the
    first n of the split, so every n is a prefix of the same images)."""
    check_colour_data(data)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if data == "cifar10":
        return load_cifar10(split, n, download=download)
    spec = SYNTHETIC_SPLITS[split]
    size = spec["n"] if n is None else n
    if not 1 <= size <= spec["n"]:
        raise ValueError(f"the synthetic {split} split has {spec['n']} images; asked for n = {n}")
    return synthetic_colour_set(size, seed=spec["seed"])
