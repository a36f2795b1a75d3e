"""MNIST, one split at a time, the course's one split of it, and its binarised form.

Files live under ``<data root>/MNIST/raw/`` exactly where torchvision puts them, extracted or
still gzipped, so an existing torchvision download is reused. Only the requested split is
fetched (the test split is 1.6 MB, the training split about 10 MB as .gz), through
torchvision's downloader. The files are read here rather than by
``torchvision.datasets.MNIST``, which needs both splits extracted into a folder it may write
to: the course reads one split, either form, from a data root that may be read-only.

The split every MNIST generator in the course uses:
  training  the first ``n_train`` digits of MNIST's training split (``training_images``)
  reference MNIST's test split, 10,000 digits never trained on: what generated digits are
            compared with (``test_images``; ``evaluation.judge``)
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from .download import fetch
from .paths import data_dir

# The mirrors torchvision uses, in the same order.
MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]
# Per split, its (images, labels) files: the name of the extracted file, the md5 of the
# extracted file, the md5 of the downloaded .gz (name + ".gz").
FILES = {
    "train": [("train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
              ("train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624", "d53e105ee54ea40749a09fcbcd1e9432")],
    "test": [("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea", "9fb629c4189551a2d022fa330f9573f3"),
             ("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637", "ec29112dd5afa0611ce80d1b7f02629c")],
}


def mnist_files(split: str, root: Path | None = None, download: bool = True) -> tuple[Path, Path]:
    """Paths of the (images, labels) files of ``split``, each checked against its md5.

    Each file may be there extracted (as torchvision leaves it) or as the downloaded ``.gz``;
    the extracted one is used when both are. With neither, the ``.gz`` is downloaded. A file
    that is there but fails its checksum raises ``ValueError`` naming it: it is corrupt,
    not missing.
    """
    if split not in FILES:
        raise ValueError(f"unknown MNIST split {split!r}; allowed: {', '.join(FILES)}")
    raw = Path(root if root is not None else data_dir()) / "MNIST" / "raw"
    paths = []
    for name, md5, gz_md5 in FILES[split]:
        if (raw / name).exists():
            paths.append(fetch(raw / name, [], md5, download=False, what=f"MNIST {split} file"))
        else:
            paths.append(fetch(raw / f"{name}.gz", [m + name + ".gz" for m in MIRRORS], gz_md5,
                               download, f"MNIST {split} file"))
    return paths[0], paths[1]


def split_available(split: str, root: Path | None = None) -> bool:
    """True if both files of ``split`` are on disk, in either form; a corrupt file raises."""
    try:
        mnist_files(split, root, download=False)
        return True
    except FileNotFoundError:
        return False


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (gzipped if its name ends in .gz): a magic number (2051 images,
    2049 labels), the sizes, then the bytes."""
    with (gzip.open(path, "rb") if Path(path).suffix == ".gz" else open(path, "rb")) as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):
        raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {magic})")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist(split: str = "train", n: int | None = None, root: Path | None = None,
               download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 [N, 1, 28, 28] scaled to [-1, 1], and int64 labels [N].

    ``n`` keeps the first n images. MNIST's files are shuffled across digits but stored in
    writer order, so the first n are not a random draw of writers (see ``evaluation.judge.frechet_floor``).
    """
    images_path, labels_path = mnist_files(split, root, download)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if n is not None:
        if not 1 <= n <= len(images):
            raise ValueError(f"n must be in 1..{len(images)} for the {split} split, got {n}")
        images, labels = images[:n], labels[:n]
    x = torch.from_numpy(images.copy()).float().div_(127.5).sub_(1.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


N_TEST = 10_000  # MNIST's test split: the reference for every generated digit



def data_spec(n_train: int) -> dict:
    return {"dataset": "MNIST", "train_images": f"train[0:{n_train}]", "reference": f"test[0:{N_TEST}]"}


def training_images(n_train: int = 60_000) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n_train`` digits of MNIST's training split (images in [-1, 1], labels)."""
    return load_mnist("train", n=n_train)


def test_images() -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST's test split: the reference generated digits are compared with."""
    return load_mnist("test")


BINARISATIONS = ("threshold", "bernoulli")


def binarise(images: torch.Tensor, mode: str = "threshold", threshold: float = 0.5,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Images in [-1, 1] (``load_mnist``) -> {0, 1} float32 of the same shape.

    With intensity u = (x + 1) / 2 in [0, 1]: ``threshold`` gives 1 where u > threshold
    (deterministic); ``bernoulli`` gives 1 with probability u (a new draw per call, fixed by
    ``generator``)."""
    if mode not in BINARISATIONS:
        raise ValueError(f"unknown binarisation {mode!r}; allowed: {', '.join(BINARISATIONS)}")
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must lie in [0, 1), got {threshold!r}")
    u = ((images.float() + 1) / 2).clamp(0, 1)
    if mode == "threshold":
        return (u > threshold).float()
    return (torch.rand(u.shape, generator=generator) < u.cpu()).float().to(u.device)


def load_binary_mnist(split: str = "train", n: int | None = None, mode: str = "threshold",
                      seed: int = 0, root: Path | None = None,
                      download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST as {0, 1} float32 [N, 1, 28, 28] (see ``binarise``) and int64 labels [N]."""
    images, labels = load_mnist(split, n, root, download)
    return binarise(images, mode, generator=torch.Generator().manual_seed(seed)), labels
