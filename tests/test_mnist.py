import gzip
import urllib.error
import urllib.request

import pytest
import torch

from diffusion_course.data import paths
from diffusion_course.data import mnist
from diffusion_course.data.download import DataNotFoundError


def _offline(monkeypatch):
    def refuse(*a, **k):
        raise urllib.error.URLError("network is unreachable")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_offline_empty_root_says_what_and_where(tmp_path, monkeypatch):
    _offline(monkeypatch)
    with pytest.raises(DataNotFoundError) as err:
        mnist.load_mnist("test", root=tmp_path)
    msg = str(err.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and "ossci-datasets" in msg
    assert str(tmp_path / "MNIST" / "raw") in msg and "COURSE_DATA_ROOT" in msg
    assert not any(tmp_path.rglob("*.part")), "no half-written download left behind"
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_corrupt_file_is_rejected_by_md5(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"not mnist"))
    with pytest.raises(ValueError, match="corrupt: md5 .* expected 9fb629c4"):
        mnist.load_mnist("test", root=tmp_path, download=False)


def test_bad_download_is_discarded(tmp_path, monkeypatch):
    class FakeResponse:             # what torchvision's downloader reads: url, length, chunks
        url, length = "https://example.invalid/t10k-images-idx3-ubyte.gz", 7

        def __init__(self):
            self.chunks = [b"garbage"]
        def read(self, n):
            return self.chunks.pop() if self.chunks else b""
        def __enter__(self):
            return self
        def __exit__(self, *a):
            return False
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: FakeResponse())
    with pytest.raises(DataNotFoundError, match="md5"):
        mnist.load_mnist("test", root=tmp_path)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_unknown_split():
    with pytest.raises(ValueError, match="allowed: train, test"):
        mnist.load_mnist("validation")


def _fake_split(raw, monkeypatch, gz: bool):
    """A 3-image 'train' split written as IDX files (gzipped or extracted), with FILES
    pinned to their md5s. Returns the images as uint8."""
    import hashlib

    import numpy as np

    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    blobs = {"train-images-idx3-ubyte": (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in images.shape) + images.tobytes(),
             "train-labels-idx1-ubyte": (2049).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes([7, 2, 1])}
    raw.mkdir(parents=True, exist_ok=True)
    pins = []
    for name, blob in blobs.items():
        packed = gzip.compress(blob)
        (raw / (name + ".gz" if gz else name)).write_bytes(packed if gz else blob)
        pins.append((name, hashlib.md5(blob).hexdigest(), hashlib.md5(packed).hexdigest()))
    monkeypatch.setitem(mnist.FILES, "train", pins)
    return images


@pytest.mark.parametrize("gz", [True, False])
def test_extracted_or_gzipped_files_both_load(tmp_path, monkeypatch, gz):
    _offline(monkeypatch)
    images = _fake_split(tmp_path / "MNIST" / "raw", monkeypatch, gz)
    x, y = mnist.load_mnist("train", root=tmp_path)
    assert y.tolist() == [7, 2, 1] and x.shape == (3, 1, 28, 28)
    assert torch.equal(x, torch.from_numpy(images).float().div(127.5).sub(1).unsqueeze(1))
    assert mnist.split_available("train", tmp_path)
    assert mnist.mnist_files("train", tmp_path)[0].name.endswith(".gz") == gz


def test_a_corrupt_extracted_file_is_an_error_not_missing(tmp_path, monkeypatch):
    _offline(monkeypatch)
    raw = tmp_path / "MNIST" / "raw"
    _fake_split(raw, monkeypatch, gz=False)
    (raw / "train-labels-idx1-ubyte").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte is corrupt: md5"):
        mnist.load_mnist("train", root=tmp_path)
    with pytest.raises(ValueError, match="corrupt"):   # not quietly "unavailable"
        mnist.split_available("train", tmp_path)
    assert not mnist.split_available("test", tmp_path)  # missing is missing


def test_real_pins_match_the_shared_copy(real_data_root):
    # the shared copy holds the test split as .gz and the training split extracted
    train_images, _ = mnist.mnist_files("train", real_data_root, download=False)
    test_images, _ = mnist.mnist_files("test", real_data_root, download=False)
    assert train_images.name == "train-images-idx3-ubyte" and test_images.suffix == ".gz"
    x, y = mnist.load_mnist("train", n=100, root=real_data_root, download=False)
    assert x.shape == (100, 1, 28, 28) and y[0].item() == 5   # the first training label


def test_only_the_requested_split_is_needed(real_data_root):
    x, y = mnist.load_mnist("test", n=500, root=real_data_root, download=False)
    assert x.shape == (500, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (500,)
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    assert set(y.tolist()) == set(range(10))
    full_x, full_y = mnist.load_mnist("test", root=real_data_root, download=False)
    assert full_x.shape[0] == 10_000 and torch.equal(full_x[:500], x)
    # Known first label of the MNIST test split.
    assert full_y[0].item() == 7
    with pytest.raises(ValueError, match="n must be in 1..10000"):
        mnist.load_mnist("test", n=0, root=real_data_root)


def test_data_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_DATA_ROOT", str(tmp_path))
    assert paths.data_dir() == tmp_path
