"""Audio maths: STFT round trip, the mel filterbank, WAV files, Griffin-Lim, the angle
schedule with the v-parameterisation, the 1-D U-Net and the chapter's front ends."""
import math
import wave

import numpy as np
import pytest
import torch

from diffusion_course.course import players
from diffusion_course.data import audio
from diffusion_course.evaluation import speech
from diffusion_course.data.front_ends import BINS, FRAMES, FrontEnd, LENGTH
from diffusion_course.evaluation.speech import _shift_frames
from diffusion_course.diffusion.objectives import target, to_x0_eps
from diffusion_course.diffusion.sampling import predict
from diffusion_course.diffusion.schedules import NoiseSchedule
from diffusion_course.models.unet1d import UNet1d


def _chirp(n=LENGTH, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 8000
    return 0.5 * torch.sin(2 * math.pi * (200 + 1500 * t) * t) + 0.05 * torch.randn(n, generator=g)


def test_stft_shape_and_exact_inverse():
    x = torch.stack([_chirp(seed=0), _chirp(seed=1)])
    spec = audio.stft(x)
    assert spec.shape == (2, 129, 1 + LENGTH // 64)
    assert torch.allclose(audio.istft(spec, LENGTH), x, atol=1e-5)


def test_stft_puts_a_tone_in_its_bin():
    k = 40  # bin 40 of n_fft 256 at 8 kHz: 40 * 31.25 = 1250 Hz
    x = torch.sin(2 * math.pi * 1250 * torch.arange(LENGTH) / 8000)
    mag = audio.magnitude(x)
    assert (mag[:, 10:-10].argmax(0) == k).all()
    # Parseval-ish: a unit sine under a Hann window of 256 has peak |X| = 256 / 4 = 64.
    assert mag[k, 10:-10].mean().item() == pytest.approx(64, rel=1e-3)


def test_mel_filterbank_properties():
    fb = audio.mel_filterbank(n_mels=40, n_fft=256, sample_rate=8000)
    assert fb.shape == (40, 129) and (fb >= 0).all() and fb.max() <= 1 + 1e-6
    centres = audio.mel_to_hz(np.linspace(0, audio.hz_to_mel(4000), 42))[1:-1]
    peaks = fb.argmax(1).numpy() * 8000 / 256
    assert np.all(np.abs(peaks - centres) <= 8000 / 256)  # each filter peaks at its centre bin
    assert (np.diff(fb.argmax(1).numpy()) >= 0).all()  # centres ascend
    inner = fb.sum(0)[(np.arange(129) * 31.25 > centres[0]) & (np.arange(129) * 31.25 < centres[-1])]
    assert torch.allclose(inner, torch.ones_like(inner), atol=1e-5)  # neighbours sum to 1
    assert audio.mel_to_hz(audio.hz_to_mel(1000.0)) == pytest.approx(1000.0)
    assert audio.hz_to_mel(1000.0) == pytest.approx(1000.0, abs=0.5)  # the scale's anchor
    with pytest.raises(ValueError, match="f_min < f_max"):
        audio.mel_filterbank(f_max=5000)


def test_log_mel_of_silence_is_the_floor():
    lm = audio.log_mel(torch.zeros(2, 4096), n_mels=32)
    assert lm.shape == (2, 32, 65) and torch.allclose(lm, torch.full_like(lm, math.log(1e-5)))


def test_wav_write_read_round_trip(tmp_path):
    x = torch.linspace(-1, 1, 801)
    path = audio.write_wav(tmp_path / "a.wav", x, 8000)
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 8000, 801)
        back = np.frombuffer(w.readframes(801), "<i2") / 32767
    assert np.abs(back - x.numpy()).max() <= 0.5 / 32767 + 1e-9
    assert audio.to_int16(np.array([2.0, -3.0])).tolist() == [32767, -32767]  # clipped
    with pytest.raises(ValueError, match="mono"):
        audio.wav_bytes(np.zeros((2, 10)))


def test_griffin_lim_reduces_spectral_error():
    x = _chirp()
    mag = audio.magnitude(x)
    y, errors = audio.griffin_lim(mag, LENGTH, n_iter=32, generator=torch.Generator().manual_seed(0),
                                  return_errors=True)
    assert errors[0] > 0.3  # random phases are far off
    assert errors[-1] < 0.5 * errors[0]
    assert audio.spectral_convergence(y, mag) < 0.15


def test_player_grid_embeds_wavs():
    html = players.player_grid([[np.zeros(80), np.ones(80) * 0.1]], ["zero"], ["a", "b"]).data
    assert html.count("<audio") == 2 and "data:audio/wav;base64," in html and "<th>zero</th>" in html
    assert "data-file" not in html                          # unnamed: nothing for the runner to write


def test_named_player_grid_round_trips_its_wavs():
    from diffusion_course.course.report import named_clips

    clips = [[np.zeros(1024), np.full(1024, 0.5)], [np.full(1024, -0.5), np.zeros(1024)]]
    html = players.player_grid(clips, ["digit 0", "digit 1"], ["real", "student 1"], name="grid").data
    files = named_clips(html)
    assert sorted(files) == ["grid/digit-0_real.wav", "grid/digit-0_student-1.wav",
                             "grid/digit-1_real.wav", "grid/digit-1_student-1.wav"]
    assert files["grid/digit-0_student-1.wav"] == audio.wav_bytes(clips[0][1])
    with_specs = players.player_grid(clips, ["digit 0", "digit 1"], ["real", "student 1"], spectrograms=True).data
    assert with_specs.count("<audio") == with_specs.count('<img alt="spectrogram') == 4
    assert players.spectrogram_png(np.zeros(1024))[:8] == b"\x89PNG\r\n\x1a\n"
    for bad in ("../up.wav", "/abs.wav", "grid/.hidden.wav", "a b.wav", "clip.mp3"):
        with pytest.raises(ValueError, match="must be a relative path"):
            players.audio_player_html(np.zeros(8), file=bad)


def test_angle_schedule_v_conversions_round_trip():
    """v = alpha eps - sigma x0; x0 = alpha x_t - sigma v; eps = sigma x_t + alpha v, with
    alpha = cos(pi tau / 2), sigma = sin(pi tau / 2) read off the angle schedule."""
    sched = NoiseSchedule.make("angle", 1000)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, 3, 16, generator=g, dtype=torch.float64), torch.randn(5, 3, 16, generator=g, dtype=torch.float64)
    for t in (1, 300, 500, 999):
        a, s = sched.alpha_bars[t].sqrt(), (1 - sched.alpha_bars[t]).sqrt()
        assert a.item() == pytest.approx(math.cos(math.pi * t / 2000)) and s.item() == pytest.approx(math.sin(math.pi * t / 2000))
        xt = a * x0 + s * eps
        v = target("v", x0, eps, a, s)
        assert torch.allclose(v, a * eps - s * x0)
        x0_hat, eps_hat = to_x0_eps("v", v, xt, a, s)
        assert torch.allclose(x0_hat, x0, atol=1e-10) and torch.allclose(eps_hat, eps, atol=1e-10)
        # v is the velocity d x_phi / d phi of x_phi = cos(phi) x0 + sin(phi) eps
        phi, h = math.atan2(s.item(), a.item()), 1e-6
        dx = ((math.cos(phi + h) - math.cos(phi - h)) * x0 + (math.sin(phi + h) - math.sin(phi - h)) * eps) / (2 * h)
        assert torch.allclose(dx, v, atol=1e-8)


@pytest.mark.parametrize("kwargs, channels, length", [
    (dict(stem="conv"), 129, 128), (dict(stem="patch", patch=64), 1, 8192),
    (dict(stem="strided"), 1, 8192)])
def test_unet1d_shapes_and_conditioning(kwargs, channels, length):
    torch.manual_seed(0)
    net = UNet1d(in_channels=channels, base=16, num_classes=10, **kwargs)
    for p in net.parameters():  # zero-initialised layers would hide the label's effect
        torch.nn.init.normal_(p, std=0.05)
    x, t = torch.randn(3, channels, length), torch.tensor([1, 500, 999])
    labels = torch.tensor([1, 2, 3])
    out = net(x, t, labels)
    assert out.shape == x.shape
    assert not torch.allclose(out, net(x, t, torch.tensor([4, 5, 6])))  # labels matter
    assert torch.allclose(net(x, t), net(x, t, torch.full((3,), 10)))  # None = the null label
    # Guidance through the course's sampler: w = 1 is the conditional prediction.
    a, s = torch.tensor(0.6), torch.tensor(0.8)
    x0_w1, _ = predict(net, x, 500, "v", a, s, labels, guidance=1.0, clip_x0=False)
    x0_c, _ = predict(net, x, 500, "v", a, s, labels, clip_x0=False)
    assert torch.allclose(x0_w1, x0_c, atol=1e-5)


def test_unet1d_patch_fold_is_invertible_and_errors():
    net = UNet1d(in_channels=2, base=16, stem="patch", patch=8)
    x = torch.randn(2, 2, 64)
    folded = net.shorten(x)
    assert folded.shape == (2, 16, 8) and torch.equal(folded[0, :8, 0], x[0, 0, :8])
    assert torch.equal(net.lengthen(folded), x)
    with pytest.raises(ValueError, match="multiple of 32"):
        net(torch.randn(1, 2, 48), torch.tensor([3]))
    with pytest.raises(ValueError, match="allowed: conv, patch, strided"):
        UNet1d(stem="fft")


def test_front_ends_round_trip():
    x = torch.stack([_chirp(seed=0), _chirp(seed=1)]) * 0.9
    x[:, -256:] = 0  # the last STFT frame is dropped by the front ends: keep the clip's end silent
    for name in ("patch", "strided", "stft"):
        fe = FrontEnd(name)
        z = fe.encode(x)
        assert z.shape[1] == fe.channels
        assert torch.allclose(fe.decode(z), x, atol=1e-4), name
    fe = FrontEnd("logmag", gl_iters=32)
    z = fe.encode(x)
    assert z.shape == (2, BINS, FRAMES) and z.min() >= -1 and z.max() <= 1
    assert torch.allclose(fe.magnitude(z), audio.magnitude(x)[..., :FRAMES], atol=1e-4)
    y = fe.decode(z, torch.Generator().manual_seed(0))
    assert audio.spectral_convergence(y[0], audio.magnitude(x[0])) < 0.2


def test_shift_frames_moves_content_and_fills_with_floor():
    spec = torch.arange(2 * 3 * 10, dtype=torch.float32).reshape(2, 3, 10) + 1
    out = _shift_frames(spec, torch.Generator().manual_seed(0), 3)
    for i in range(2):
        row = out[i, 0]
        kept = row[row != spec.min()]
        assert len(kept) >= 7 and torch.equal(kept, torch.sort(kept).values)  # order kept


def test_unet1d_v_from_x0_head_gives_back_its_x0_in_the_sampler():
    """With v_from_x0 the network returns v = (alpha x_t - x0_hat) / sigma; the sampler's
    x0 = alpha x_t - sigma v must then be the head's x0_hat, at every t, and the v-loss is the
    x0-loss times 1 + SNR."""
    torch.manual_seed(0)
    net = UNet1d(in_channels=6, base=16, num_classes=10, v_from_x0="angle", schedule_T=100)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    sched = NoiseSchedule.make("angle", 100)
    x, labels = torch.randn(2, 6, 32), torch.tensor([3, 10])
    for t in (1, 50, 99, 100):
        a, s = sched.alpha_bars[t].sqrt().float(), (1 - sched.alpha_bars[t]).sqrt().float()
        v = net(x, torch.tensor([t, t]), labels)
        net.config["v_from_x0"] = None
        x0_head = net(x, torch.tensor([t, t]), labels)
        net.config["v_from_x0"] = "angle"
        x0_hat, _ = predict(net, x, t, "v", a, s, labels, clip_x0=False)
        assert torch.allclose(x0_hat, x0_head, atol=1e-5 / max(s.item(), 1e-2)), t
        x0 = torch.randn_like(x)
        v_true = (a * x - x0) / s
        assert torch.allclose((v - v_true).pow(2).sum(), (x0_head - x0).pow(2).sum() / s**2, rtol=1e-3)


def _tone(seconds, freq=440.0, sr=8000, amp=0.5):
    t = torch.arange(round(seconds * sr)) / sr
    return amp * torch.sin(2 * math.pi * freq * t)


def test_burst_count_counts_separated_voiced_segments():
    silence = lambda s: torch.zeros(round(s * 8000))
    one = torch.cat([silence(0.2), _tone(0.3), silence(0.2)])
    two = torch.cat([silence(0.1), _tone(0.2), silence(0.2), _tone(0.2), silence(0.1)])
    stop = torch.cat([_tone(0.2), silence(0.04), _tone(0.2)])          # a short pause inside a word
    click = torch.cat([_tone(0.3), silence(0.3), _tone(0.02)])         # a 20 ms click is not a burst
    quiet = torch.cat([_tone(0.3), silence(0.3), _tone(0.2, amp=0.005)])   # 40 dB down: not voiced
    assert [speech.burst_count(c) for c in (one, two, stop, click, quiet)] == [1, 2, 1, 1, 1]
    assert speech.burst_count(silence(0.5)) == 0 and speech.burst_count(torch.zeros(10)) == 0
    (start, end), = speech.voiced_segments(one)
    assert abs(start - 0.2) <= 0.02 and abs(end - 0.5) <= 0.02


def test_real_spoken_digits_are_mostly_one_or_two_bursts(fsdd_root):
    from diffusion_course.data import fsdd
    clips = fsdd.load_fsdd("test", root=fsdd_root).audio[:100]
    counts = torch.tensor([speech.burst_count(c) for c in clips], dtype=torch.float)
    assert ((counts >= 1) & (counts <= 2)).float().mean() >= 0.9, counts.tolist()


def test_burst_summary_energy_centre_and_the_floor_at_the_same_n():
    from diffusion_course.evaluation.speech import burst_summary, energy_centre

    sr, n = 8000, 8192
    t = torch.arange(n) / sr
    tone = torch.sin(2 * torch.pi * 300 * t)
    one = tone * ((t > 0.4) & (t < 0.6))                          # one burst around 0.5 s
    two = tone * (((t > 0.1) & (t < 0.25)) | ((t > 0.7) & (t < 0.85)))
    s = burst_summary(torch.stack([one, one, two, torch.zeros(n)]))
    assert s["one"] == 0.5 and s["two"] == 0.25 and s["silent"] == 0.25 and s["mean"] == pytest.approx(1.0)
    centre = energy_centre(torch.stack([one, two]))
    assert centre[0] == pytest.approx(0.5, abs=0.01) and centre[1] == pytest.approx(0.475, abs=0.01)


def test_the_floor_at_the_same_n_shrinks_as_n_grows():
    """An FD from fewer clips is larger: the judge draws its floor at the N of the clips scored,
    once per N."""
    from diffusion_course.evaluation.speech import AudioJudge
    from diffusion_course.models.classifier import SpokenDigitClassifier

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    pool, real = torch.randn(400, 2048, generator=g) * 0.3, torch.randn(200, 2048, generator=g) * 0.3
    judge = AudioJudge(SpokenDigitClassifier(), real, torch.zeros(len(real), dtype=torch.long), pool)
    small, large = (judge.evaluate(pool[:n], torch.zeros(n, dtype=torch.long)) for n in (40, 200))
    assert small["frechet_floor"] > large["frechet_floor"] > 0 and small["floor_n"] == 40
    assert small["frechet_ratio"] == pytest.approx(small["frechet"] / small["frechet_floor"])
    assert judge.floor(40) is judge.floor(40)                   # computed once
    _, pred, _ = judge.classify(real)
    assert judge.test_accuracy == pytest.approx((pred == 0).double().mean().item())
    assert small["accuracy"] == pytest.approx(small["per_digit_accuracy"][0]) and len(small["per_digit_accuracy"]) == 1
    assert set(small["bursts"]) >= {"mean", "one", "two", "three_or_more"}
