"""Your own pictures: every image of a folder, resized and centre-cropped to ``size`` x ``size``,
grayscale or colour, as a tensor in [-1, 1] the course's recipes train on.

The folder is read through ``torchvision.datasets.ImageFolder`` when it holds one subfolder per
class (the labels are kept), else as a flat folder of images (``torchvision``'s own list of
image suffixes, any depth); each file is decoded by torchvision's loader (Pillow). What goes
wrong is said plainly:

    a folder that is missing, or holds no image        an error that says what was looked for
    a file that cannot be decoded                      skipped; the count and names are reported
    an image smaller than ``size`` on its short side   an error that names them (upscaling would
                                                       make blurry training data)
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class ImageFolderData:
    images: torch.Tensor                      # [N, C, size, size] in [-1, 1]
    labels: torch.Tensor                      # [N] class index (0 for a flat folder)
    classes: list[str]                        # class names (subfolders), or [] for a flat folder
    files: list[str]                          # the files read, relative to the folder
    skipped: list[str] = field(default_factory=list)   # files that could not be decoded

    def spec(self, folder: Path, size: int, channels: int) -> dict:
        """What names this data in a cache key: the folder, the files' names, sizes and
        modification times (so edited or added pictures train a new model), size, channels."""
        digest = hashlib.sha256()
        for name in self.files:
            stat = (Path(folder) / name).stat()
            digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return {"folder": str(Path(folder).resolve()), "files": len(self.files), "fingerprint": digest.hexdigest()[:16],
                "size": size, "channels": channels}


def image_files(folder: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """([(file, class index)], class names): ImageFolder's layout when the folder has class
    subfolders with images, else every image file below it with class 0."""
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder {folder}: give the folder that holds your images")
    if any(p.is_dir() and any(q.suffix.lower() in IMG_EXTENSIONS for q in p.rglob("*")) for p in folder.iterdir()):
        found = ImageFolder(str(folder), allow_empty=True)
        return [(Path(path), label) for path, label in found.samples], list(found.classes)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
    return [(p, 0) for p in files], []


def load_image_folder(folder: Path, size: int, channels: int = 3, limit: int | None = None) -> ImageFolderData:
    """The images of ``folder`` (see the module docstring), at most ``limit`` of them."""
    from PIL import Image, UnidentifiedImageError
    from torchvision import transforms

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (colour), got {channels!r}")
    files, classes = image_files(folder)
    if not files:
        raise ValueError(f"{folder} holds no images (looked for .png, .jpg, .jpeg, .bmp, .webp, .tif "
                         f"and the other suffixes torchvision reads, in the folder or in one "
                         f"subfolder per class)")
    to_tensor = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size),
                                    *([transforms.Grayscale(1)] if channels == 1 else []),
                                    transforms.ToTensor()])
    images, labels, names, skipped, small = [], [], [], [], []
    for path, label in files[:limit]:
        name = str(path.relative_to(folder))
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
        except (UnidentifiedImageError, OSError):
            skipped.append(name)
            continue
        if min(im.size) < size:
            small.append(f"{name} ({im.size[0]}x{im.size[1]})")
            continue
        images.append(to_tensor(im) * 2 - 1)
        labels.append(label)
        names.append(name)
    if small:
        raise ValueError(f"{len(small)} image(s) are smaller than {size} pixels on their short side, e.g. "
                         f"{', '.join(small[:5])}: choose a smaller size, or remove them")
    if not images:
        raise ValueError(f"none of the {len(files)} image files in {folder} could be read "
                         f"(e.g. {', '.join(skipped[:5])})")
    return ImageFolderData(torch.stack(images), torch.tensor(labels), classes, names, skipped)
