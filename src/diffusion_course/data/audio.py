"""Audio as data: WAV files (standard library ``wave``), the STFT and its inverse, a mel
filterbank written out, log-mel and log-magnitude spectrograms, Griffin-Lim phase recovery.
(Players and plots of clips are in ``course.players``; the burst count in ``evaluation.speech``.)

STFT conventions (torch.stft): a periodic Hann window of ``n_fft`` samples, hop ``hop``,
``center=True`` (the signal is reflect-padded by n_fft / 2 on both sides), so a clip of N
samples gives 1 + N // hop frames of n_fft // 2 + 1 frequency bins; bin k is at
k * sr / n_fft Hz (31.25 Hz apart for n_fft = 256 at 8 kHz). With hop = n_fft / 4 the
squared Hann windows overlap-add to a constant, so ``istft(stft(x)) == x`` up to round-off.
"""
from __future__ import annotations

import io
import math
import wave
from pathlib import Path

import numpy as np
import torch

N_FFT, HOP = 256, 64


# ---------------------------------------------------------------------------------------
# WAV files
# ---------------------------------------------------------------------------------------
def to_int16(x) -> np.ndarray:
    """Float samples in [-1, 1] to 16-bit PCM (clipped, rounded): round(x * 32767)."""
    x = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    return np.round(np.clip(x.astype(np.float64), -1, 1) * 32767).astype("<i2")


def wav_bytes(x, sample_rate: int = 8000) -> bytes:
    """A mono 16-bit WAV file (header + samples) as bytes."""
    x = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"expected one mono clip [samples], got shape {x.shape}")
    if not isinstance(sample_rate, int) or sample_rate < 1:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(to_int16(x).tobytes())
    return buf.getvalue()


def write_wav(path: Path, x, sample_rate: int = 8000) -> Path:
    path = Path(path)
    path.write_bytes(wav_bytes(x, sample_rate))
    return path


# ---------------------------------------------------------------------------------------
# Spectrograms
# ---------------------------------------------------------------------------------------
def _window(n_fft: int, device=None) -> torch.Tensor:
    return torch.hann_window(n_fft, device=device)


def stft(x: torch.Tensor, n_fft: int = N_FFT, hop: int = HOP) -> torch.Tensor:
    """Complex STFT [..., n_fft // 2 + 1 bins, 1 + N // hop frames] of clips [..., N]."""
    shape = x.shape
    spec = torch.stft(x.reshape(-1, shape[-1]).float(), n_fft, hop, window=_window(n_fft, x.device),
                      center=True, return_complex=True)
    return spec.reshape(*shape[:-1], *spec.shape[-2:])


def istft(spec: torch.Tensor, length: int, n_fft: int = N_FFT, hop: int = HOP) -> torch.Tensor:
    """Inverse of ``stft``: the least-squares signal whose STFT is closest to ``spec``
    (weighted overlap-add), [..., length]."""
    shape = spec.shape
    x = torch.istft(spec.reshape(-1, *shape[-2:]), n_fft, hop, window=_window(n_fft, spec.device),
                    center=True, length=length)
    return x.reshape(*shape[:-2], length)


def magnitude(x: torch.Tensor, n_fft: int = N_FFT, hop: int = HOP) -> torch.Tensor:
    return stft(x, n_fft, hop).abs()


def hz_to_mel(f):
    """The HTK mel scale: m = 2595 log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int = 64, n_fft: int = N_FFT, sample_rate: int = 8000,
                   f_min: float = 0.0, f_max: float | None = None) -> torch.Tensor:
    """[n_mels, n_fft // 2 + 1] triangular filters, centres equally spaced in mel.

    Filter m rises linearly from centre c_{m-1} to c_m and falls to c_{m+1} (Hz, mapped from
    n_mels + 2 equally spaced mel points between f_min and f_max); at every bin it is
    max(0, min((f - c_{m-1}) / (c_m - c_{m-1}), (c_{m+1} - f) / (c_{m+1} - c_m))), so its
    peak is 1 and neighbouring filters sum to 1 between their centres.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got {f_min}, {f_max}")
    if n_mels < 1:
        raise ValueError(f"n_mels must be positive, got {n_mels}")
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)           # bin k at k sr / n_fft
    centres = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lo, mid, hi = centres[:-2, None], centres[1:-1, None], centres[2:, None]
    rise, fall = (freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)
    return torch.from_numpy(np.maximum(0.0, np.minimum(rise, fall))).float()


def log_mel(x: torch.Tensor, n_mels: int = 64, n_fft: int = N_FFT, hop: int = HOP,
            sample_rate: int = 8000, floor: float = 1e-5) -> torch.Tensor:
    """log(mel filterbank @ |STFT|^2 + floor): [..., n_mels, frames]."""
    power = stft(x, n_fft, hop).abs().pow(2)
    fb = mel_filterbank(n_mels, n_fft, sample_rate).to(power.device)
    return torch.log(torch.einsum("mk,...kt->...mt", fb, power) + floor)


def griffin_lim(mag: torch.Tensor, length: int, n_iter: int = 64, n_fft: int = N_FFT,
                hop: int = HOP, momentum: float = 0.99, generator: torch.Generator | None = None,
                return_errors: bool = False):
    """A signal whose STFT magnitude is close to ``mag`` [..., bins, frames] (Griffin & Lim
    1984, with the "fast" momentum of Perraudin et al. 2013):

        x_k     = istft(mag * exp(i angle(c_k)))         impose the wanted magnitude
        t_k     = stft(x_k)                              the nearest consistent STFT
        c_{k+1} = t_k + momentum * (t_k - t_{k-1})

    starting from random phases. With ``return_errors`` also returns the spectral
    convergence || |stft(x_k)| - mag || / || mag || after each iteration.
    """
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    mag = mag.float()
    phase = torch.rand(mag.shape, generator=generator) * 2 * math.pi
    c = torch.polar(torch.ones_like(mag), phase.to(mag.device))
    prev = torch.zeros_like(c)
    errors = []
    for _ in range(n_iter):
        x = istft(mag * torch.exp(1j * c.angle()), length, n_fft, hop)
        t = stft(x, n_fft, hop)
        if return_errors:
            errors.append(((t.abs() - mag).norm() / mag.norm().clamp(min=1e-12)).item())
        c, prev = t + momentum * (t - prev), t
    x = istft(mag * torch.exp(1j * c.angle()), length, n_fft, hop)
    return (x, errors) if return_errors else x


def spectral_convergence(x: torch.Tensor, mag: torch.Tensor, n_fft: int = N_FFT, hop: int = HOP) -> float:
    """|| |stft(x)| - mag ||_F / || mag ||_F: 0 when x has exactly the magnitude ``mag``."""
    return ((magnitude(x, n_fft, hop) - mag).norm() / mag.norm()).item()
