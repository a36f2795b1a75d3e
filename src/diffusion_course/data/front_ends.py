"""What chapter 11's 1-D U-Net sees of a spoken digit: four front ends, all for clips of
N = 8,192 samples (1.024 s at 8 kHz) and all ending as a sequence of 128 positions:

    patch    the waveform [1, 8192]; the U-Net folds 64 samples into channels: [64, 128]
    strided  the waveform [1, 8192]; the U-Net's first layer is a learned Conv1d(1, 64,
             kernel 128, stride 64) and its last a ConvTranspose1d back: [64, 128]
    stft     the complex STFT (n_fft 256, hop 64, 129 bins x 128 frames), real and imaginary
             parts as 258 channels, divided by their standard deviation on the training set
             (so unbounded: no clipping of x0); inverted exactly by the inverse STFT
    logmag   log(|STFT| + 1e-3), 129 bins as channels x 128 frames, mapped linearly from
             [log 1e-3, log 50] to [-1, 1] (bounded, so x0 may be clipped); the phase is
             thrown away and recovered by Griffin-Lim (64 iterations)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import audio

LENGTH = 8192                      # samples per clip: 1.024 s at 8 kHz
FRAMES = LENGTH // audio.HOP       # 128 STFT frames (torch gives 129 with center=True: the last,
                                   # centred on the clip's final sample, is dropped and zero-filled back)
BINS = audio.N_FFT // 2 + 1        # 129 frequency bins, 0 to 4 kHz in steps of 31.25 Hz
FRONT_ENDS = ("patch", "stft", "strided", "logmag")
LOG_FLOOR, LOG_MAX = 1e-3, 50.0    # |STFT| range mapped to [-1, 1] by the logmag front end
STFT_STD = 0.9                     # std of the STFT's real/imag parts on the training clips


@dataclass(frozen=True)
class FrontEnd:
    """What the U-Net sees: ``encode`` clips [B, N] -> x [B, C, L], ``decode`` back."""

    name: str
    gl_iters: int = 64

    @property
    def channels(self) -> int:
        return {"patch": 1, "strided": 1, "stft": 2 * BINS, "logmag": BINS}[self.name]

    @property
    def clip_x0(self) -> bool:
        """Clip the sampler's x0 estimate to [-1, 1] only where the representation is bounded."""
        return self.name != "stft"

    def unet_kwargs(self) -> dict:
        return {"patch": dict(stem="patch", patch=64), "strided": dict(stem="strided"),
                "stft": dict(stem="conv"), "logmag": dict(stem="conv")}[self.name]

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        if self.name in ("patch", "strided"):
            return wave[:, None, :]
        spec = audio.stft(wave)[..., :FRAMES]
        if self.name == "stft":
            return torch.cat([spec.real, spec.imag], dim=1) / STFT_STD
        logm = torch.log(spec.abs().clamp(max=LOG_MAX) + LOG_FLOOR)
        return 2 * (logm - math.log(LOG_FLOOR)) / (math.log(LOG_MAX + LOG_FLOOR) - math.log(LOG_FLOOR)) - 1

    def magnitude(self, x: torch.Tensor) -> torch.Tensor:
        """|STFT| [B, 129, 128] that ``x`` stands for (logmag only): exp of the inverse map."""
        logm = (x.float() + 1) / 2 * (math.log(LOG_MAX + LOG_FLOOR) - math.log(LOG_FLOOR)) + math.log(LOG_FLOOR)
        return (logm.exp() - LOG_FLOOR).clamp(min=0)

    def decode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = x.float()
        if self.name in ("patch", "strided"):
            return x[:, 0].clamp(-1, 1)
        if self.name == "stft":
            spec = torch.complex(x[:, :BINS], x[:, BINS:]) * STFT_STD
            return audio.istft(F.pad(spec, (0, 1)), LENGTH).clamp(-1, 1)
        mag = F.pad(self.magnitude(x), (0, 1))
        return audio.griffin_lim(mag, LENGTH, self.gl_iters, generator=generator).clamp(-1, 1)
