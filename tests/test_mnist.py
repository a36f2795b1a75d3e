import gzip
import urllib.error
import urllib.request

import pytest
import torch

from diffusion_course import data, mnist
from diffusion_course.data import DataNotFoundError


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
    class FakeResponse:
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


def test_only_the_requested_split_is_needed(real_data_root):
    # The shared copy holds only the test split: loading it must not ask for train files.
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
    assert data.data_root() == tmp_path
