"""CIFAR-10 loader on small fake archives with the real pickle layout (the checksum pin
monkeypatched to the fake's digest), its refusals (corrupt, missing, unsafe), and the
synthetic colour set of the ci and cpu profiles."""
import hashlib
import io
import os
import pickle
import tarfile
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from diffusion_course.data import cifar
from diffusion_course.data.download import DataNotFoundError

PER_BATCH = 3


def fake_batches(seed: int = 0) -> dict[str, bytes]:
    """Every file of the archive with PER_BATCH images each, pickled as the real ones are: a
    dict with bytes keys, b"data" uint8 [N, 3072] (1024 red, 1024 green, 1024 blue values,
    rows first) and b"labels" a list of ints."""
    rng = np.random.default_rng(seed)
    blobs = {}
    for i, (name, _) in enumerate(cifar.BATCHES["train"] + cifar.BATCHES["test"]):
        data = rng.integers(0, 256, size=(PER_BATCH, 3072), dtype=np.uint8)
        data[0, 0], data[0, 1] = 0, 255                  # the extremes map to -1 and 1
        batch = {b"batch_label": name.encode(), b"labels": [(i + j) % 10 for j in range(PER_BATCH)],
                 b"data": data, b"filenames": [f"{name}_{j}.png".encode() for j in range(PER_BATCH)]}
        blobs[name] = pickle.dumps(batch, protocol=2)
    blobs["batches.meta"] = pickle.dumps({b"label_names": [c.encode() for c in cifar.CLASSES]}, protocol=2)
    return blobs


def write_archive(path, blobs: dict[str, bytes]) -> str:
    """A .tar.gz holding cifar-10-batches-py/<name> for every blob; returns its md5."""
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in blobs.items():
            info = tarfile.TarInfo(f"{cifar.FOLDER}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def fake_root(tmp_path, monkeypatch):
    blobs = fake_batches()
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", write_archive(tmp_path / cifar.ARCHIVE, blobs))
    return tmp_path, blobs


def _offline(monkeypatch):
    def refuse(*a, **k):
        raise urllib.error.URLError("network is unreachable")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def expected(blobs, split):
    batches = [pickle.loads(blobs[name], encoding="bytes") for name, _ in cifar.BATCHES[split]]
    data = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)
    return torch.from_numpy(data).float() / 127.5 - 1, [l for b in batches for l in b[b"labels"]]


@pytest.mark.parametrize("split,n_images", [("train", 5 * PER_BATCH), ("test", PER_BATCH)])
def test_archive_loads_in_the_official_layout(fake_root, monkeypatch, split, n_images):
    _offline(monkeypatch)
    root, blobs = fake_root
    x, y = cifar.load_cifar10(split, root=root, download=False)
    assert x.shape == (n_images, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min().item() == -1.0 and x.max().item() == 1.0 and x[0, 0, 0, 0] == -1 and x[0, 0, 0, 1] == 1
    want_x, want_y = expected(blobs, split)
    assert torch.equal(x, want_x) and y.tolist() == want_y
    # channel c, row r, column k of image i is byte c * 1024 + r * 32 + k of its row
    row = pickle.loads(blobs[cifar.BATCHES[split][0][0]], encoding="bytes")[b"data"][1]
    assert x[1, 2, 5, 7].item() == pytest.approx(row[2 * 1024 + 5 * 32 + 7] / 127.5 - 1)
    assert cifar.available(split, root)


def test_first_n_and_bad_n(fake_root):
    root, _ = fake_root
    x, y = cifar.load_cifar10("train", n=4, root=root, download=False)
    full_x, full_y = cifar.load_cifar10("train", root=root, download=False)
    assert torch.equal(x, full_x[:4]) and torch.equal(y, full_y[:4])
    with pytest.raises(ValueError, match=r"n must be an int in 1..15"):
        cifar.load_cifar10("train", n=16, root=root, download=False)


def test_extracted_folder_is_used_and_checked(tmp_path, monkeypatch):
    blobs = fake_batches(seed=1)
    folder = tmp_path / cifar.FOLDER
    folder.mkdir()
    pins = {}
    for split, files in cifar.BATCHES.items():
        pins[split] = [(name, hashlib.md5(blobs[name]).hexdigest()) for name, _ in files]
        for name, _ in files:
            (folder / name).write_bytes(blobs[name])
    monkeypatch.setattr(cifar, "BATCHES", pins)
    x, y = cifar.load_cifar10("test", root=tmp_path, download=False)   # no archive needed
    want_x, want_y = expected(blobs, "test")
    assert torch.equal(x, want_x) and y.tolist() == want_y
    (folder / "test_batch").write_bytes(b"damaged")
    with pytest.raises(ValueError, match="test_batch is corrupt: md5"):
        cifar.load_cifar10("test", root=tmp_path, download=False)


def test_corrupt_archive_is_an_error_not_missing(tmp_path, monkeypatch):
    _offline(monkeypatch)
    (tmp_path / cifar.ARCHIVE).write_bytes(b"half a download")
    with pytest.raises(ValueError, match="corrupt: md5 .* expected c58f30108f718f92721af3b95e74349a"):
        cifar.load_cifar10("train", root=tmp_path)
    with pytest.raises(ValueError, match="corrupt"):
        cifar.available("train", tmp_path)               # not "missing": available() raises
    # bytes that pass the checksum but are no tar.gz (only possible with a patched pin)
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", hashlib.md5(b"half a download").hexdigest())
    with pytest.raises(ValueError, match="not a readable CIFAR-10 archive"):
        cifar.load_cifar10("train", root=tmp_path)


def test_archive_without_the_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", write_archive(tmp_path / cifar.ARCHIVE, {"readme.html": b"hi"}))
    with pytest.raises(ValueError, match="lacks cifar-10-batches-py/data_batch_1"):
        cifar.load_cifar10("train", root=tmp_path, download=False)


def test_unsafe_pickle_is_refused(tmp_path, monkeypatch):
    class Payload:
        def __reduce__(self):
            return (os.remove, (str(tmp_path / "canary"),))
    (tmp_path / "canary").write_text("still here")
    blobs = fake_batches()
    blobs["test_batch"] = pickle.dumps({b"data": Payload(), b"labels": [0]}, protocol=2)
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", write_archive(tmp_path / cifar.ARCHIVE, blobs))
    with pytest.raises(ValueError, match="refusing the global posix.remove|refusing the global nt.remove"):
        cifar.load_cifar10("test", root=tmp_path, download=False)
    assert (tmp_path / "canary").exists()


def test_missing_file_says_what_to_download_and_where(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        cifar.load_cifar10("train", root=tmp_path, download=False)
    msg = str(err.value)
    assert cifar.URL in msg and cifar.ARCHIVE_MD5 in msg and str(tmp_path / cifar.ARCHIVE) in msg
    assert "COURSE_DATA_ROOT" in msg and cifar.FOLDER in msg
    assert not cifar.available("train", tmp_path)


def test_offline_download_fails_cleanly(tmp_path, monkeypatch):
    _offline(monkeypatch)
    with pytest.raises(DataNotFoundError) as err:
        cifar.load_cifar10("test", root=tmp_path)
    msg = str(err.value)
    assert cifar.URL in msg and str(tmp_path / cifar.ARCHIVE) in msg and "COURSE_DATA_ROOT" in msg
    assert not any(p.is_file() for p in tmp_path.rglob("*")), "no half-written download left behind"


def test_data_root_comes_from_the_environment(fake_root, monkeypatch):
    root, _ = fake_root
    monkeypatch.setenv("COURSE_DATA_ROOT", str(root))
    x, _ = cifar.load_cifar10("test", download=False)
    assert x.shape == (PER_BATCH, 3, 32, 32)


def test_unknown_split():
    with pytest.raises(ValueError, match="allowed: train, test"):
        cifar.load_cifar10("validation")


# ---------------------------------------------------------------------------------------
# The synthetic colour set
# ---------------------------------------------------------------------------------------
def test_synthetic_colour_set_shapes_range_and_classes():
    x, y = cifar.synthetic_colour_set(200, seed=0)
    assert x.shape == (200, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= -1 and x.max() <= 1
    assert set(y.tolist()) == set(range(len(cifar.SYNTHETIC_CLASSES)))
    palette = cifar.PALETTE * 2 - 1
    for img in x[:20]:                                   # every image shows one palette colour
        pixels = img.reshape(3, -1).T
        share = max(((pixels - c).abs().max(1).values < 1e-6).float().mean().item() for c in palette)
        assert 0.05 < share < 0.6


def test_synthetic_colour_set_is_deterministic():
    a, la = cifar.synthetic_colour_set(12, seed=3)
    b, lb = cifar.synthetic_colour_set(12, seed=3)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, cifar.synthetic_colour_set(12, seed=4)[0])
    assert torch.equal(a[:5], cifar.synthetic_colour_set(5, seed=3)[0])   # a prefix does not depend on n
    with pytest.raises(ValueError, match="positive int"):
        cifar.synthetic_colour_set(0)
