"""The FSDD loader: silence trimming, placement, normalisation, errors, and the real data
when ``$COURSE_DATA_ROOT`` (or ../shared/data) holds it."""
import urllib.error
import urllib.request
import wave

import numpy as np
import pytest

from diffusion_course.data import fsdd
from diffusion_course.data.download import DataNotFoundError


def _burst(n_before: int, n_speech: int, n_after: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(n_speech)
    speech = amp * np.sin(2 * np.pi * 440 * t / 8000)
    return np.concatenate([np.zeros(n_before), speech, np.zeros(n_after)]).astype(np.float32)


def test_speech_bounds_finds_the_loud_part():
    x = _burst(640, 1280, 960)
    a, b = fsdd.speech_bounds(x, frame=64)
    assert (a, b) == (640, 640 + 1280)


def test_centre_placement_centres_the_trimmed_clip():
    x = _burst(3000, 1000, 100)
    out = fsdd.fit_length(x, 4096, "centre")
    a, b = fsdd.speech_bounds(out, frame=8)
    assert len(out) == 4096
    assert abs((a + b) / 2 - 2048) <= 16  # the burst sits in the middle, not at sample 3000
    assert np.abs(out).sum() == pytest.approx(np.abs(x).sum(), rel=1e-6)  # nothing loud was lost


def test_start_placement_pads_and_crops_at_the_end():
    x = np.arange(1, 11, dtype=np.float32)
    assert fsdd.fit_length(x, 4, "start").tolist() == [1, 2, 3, 4]
    assert fsdd.fit_length(x, 12, "start").tolist() == list(range(1, 11)) + [0, 0]


def test_long_clip_keeps_its_centre():
    x = np.linspace(-1, 1, 1001, dtype=np.float32) + 2.0  # loud everywhere: nothing trimmed
    out = fsdd.fit_length(x, 101, "centre")
    assert len(out) == 101 and out[50] == pytest.approx(x[500])


def test_normalise_peak_and_rms():
    x = _burst(500, 2000, 500, amp=0.1)
    assert np.abs(fsdd.normalise(x, "peak", 0.9)).max() == pytest.approx(0.9, rel=1e-5)
    r = fsdd.normalise(x, "rms", 0.2)
    a, b = fsdd.speech_bounds(r)
    assert np.sqrt(np.mean(r[a:b].astype(np.float64) ** 2)) == pytest.approx(0.2, rel=1e-3)
    assert np.array_equal(fsdd.normalise(np.zeros(10), "peak"), np.zeros(10))  # silence stays
    assert np.array_equal(fsdd.normalise(x, "none"), x)


@pytest.mark.parametrize("call, message", [
    (lambda: fsdd.fit_length(np.zeros(5), 4, "middle"), "allowed: centre, start"),
    (lambda: fsdd.fit_length(np.zeros(5), 0), "positive int"),
    (lambda: fsdd.normalise(np.zeros(5), "loud"), "allowed: peak, rms, none"),
    (lambda: fsdd.load_fsdd("valid"), "allowed: train, test, all"),
    (lambda: fsdd.parse_name("three_theo_1.wav"), "not an FSDD file name"),
])
def test_bad_arguments_say_what_is_allowed(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_missing_data_offline_says_what_and_where(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise urllib.error.URLError("network is unreachable")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(DataNotFoundError) as err:
        fsdd.load_fsdd("test", root=tmp_path)
    msg = str(err.value)
    assert fsdd.URL in msg and str(tmp_path / "fsdd" / "recordings") in msg and "COURSE_DATA_ROOT" in msg
    assert not any(p.is_file() for p in tmp_path.rglob("*")), "nothing half-downloaded left behind"
    with pytest.raises(DataNotFoundError, match="downloads are disabled"):
        fsdd.load_fsdd("test", root=tmp_path, download=False)


def test_wrong_files_fail_the_manifest_check(tmp_path):
    folder = tmp_path / "fsdd" / "recordings"
    folder.mkdir(parents=True)
    with wave.open(str(folder / "0_george_0.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(np.zeros(100, "<i2").tobytes())
    with pytest.raises(ValueError, match="manifest sha256"):
        fsdd.load_fsdd("test", root=tmp_path)
    assert not fsdd.available(tmp_path)


def test_real_data_split_and_shapes(fsdd_root):
    assert fsdd.manifest_sha256(fsdd.recordings_dir(fsdd_root)) == fsdd.RECORDINGS_SHA256
    test = fsdd.load_fsdd("test", root=fsdd_root)
    train = fsdd.load_fsdd("train", length=4096, placement="start", normalisation="rms", root=fsdd_root)
    assert test.audio.shape == (300, 8192) and train.audio.shape == (2700, 4096)
    assert set(test.takes.tolist()) == set(range(5)) and train.takes.min().item() == 5
    for d in (test, train):  # balanced: every (speaker, digit) pair equally often
        pairs = np.bincount((d.speakers * 10 + d.labels).numpy(), minlength=60)
        assert (pairs == len(d) // 60).all()
    assert np.abs(test.audio.numpy()).max(1) == pytest.approx(0.95, abs=1e-6)  # peak-normalised
    # The module docstring's numbers: 99.4% of raw clips fit in 8,192 samples.
    lengths = np.concatenate([test.lengths.numpy(), train.lengths.numpy()])
    assert (lengths <= 8192).mean() == pytest.approx(0.994, abs=0.001)
    # read_wav is int16 / 32768: a file's samples come back exactly.
    path = fsdd.recordings_dir(fsdd_root) / "7_theo_3.wav"
    with wave.open(str(path)) as w:
        raw = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert np.array_equal(fsdd.read_wav(path) * 32768, raw.astype(np.float32))
