"""A small 1-D U-Net for sequences [B, channels, length]: the 2-D U-Net of ``unet.py`` with
Conv1d in place of Conv2d, built by the same code (``unet.UNetTrunk``: the same residual
blocks, sinusoidal time embedding, optional self-attention at the coarsest level and the same
class conditioning, label ``num_classes`` being "no label", for label dropout and
classifier-free guidance). Only the stems and ``v_from_x0`` below are its own.

    length L --down--> L/2 --down--> L/4      (widths base * mults)
       | skip            | skip        |
    length L <--up---- L/2 <--up---- L/4

The ``stem`` decides how a long sequence is shortened before the first block, and undone
after the last one (the front ends of chapter 11):

    "conv"     no shortening: a 3-tap convolution from ``in_channels`` to ``base``
    "patch"    fold ``patch`` consecutive samples into channels: [C, L] -> [C p, L / p]
    "strided"  a learned strided convolution (kernel ``stem_kernel``, stride ``stem_stride``,
               ``stem_channels`` out), undone by a transposed convolution with the same
               kernel and stride: [C, L] -> [stem_channels, L / stride]

``v_from_x0`` (a schedule name, e.g. "angle") makes the network estimate the clean x0 and
return the velocity it implies, v = (a_t x_t - x0_hat) / s_t, with a_t = sqrt(abar_t) and
s_t = sqrt(1 - abar_t) of that schedule (T = ``schedule_T``; cos and sin of the angle for
"angle"). The loss and the sampler still see a v-prediction (v-objective, v-form sampling),
and x0 = a_t x_t - s_t v gives back x0_hat exactly.
Why: with many input channels (129 STFT bins) and a narrower first level (64), the
network cannot carry the noise of every bin through to its output; a direct v-prediction,
v = (a_t x_t - x0) / s_t, needs exactly that noise, an x0 estimate does not.
The v-loss on this output equals an x0-loss weighted by 1 / s_t^2 = 1 + SNR.

``positions=True`` adds a learned map of a sinusoidal code of each position to the stem's
output, so the network knows where in the window it is (chapter 11 measures what this does
to clips that come out as several separate bursts).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .unet import UNetTrunk, _norm, timestep_embedding

STEMS = ("conv", "patch", "strided")


class UNet1d(UNetTrunk):
    """An eps-, x0- or v-predicting 1-D U-Net: forward(x [B, C, L], t [B], labels [B] or None)."""

    def __init__(self, in_channels: int = 1, base: int = 64, mults: tuple[int, ...] = (1, 2, 2),
                 blocks_per_level: int = 1, attention_levels: tuple[int, ...] = (2,),
                 dropout: float = 0.0, num_classes: int | None = None, stem: str = "conv",
                 patch: int = 1, stem_kernel: int = 128, stem_stride: int = 64,
                 stem_channels: int = 64, v_from_x0: str | None = None, schedule_T: int = 1000,
                 positions: bool = False):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; allowed: {', '.join(STEMS)}")
        if stem == "strided" and (stem_kernel < stem_stride or (stem_kernel - stem_stride) % 2):
            raise ValueError("a strided stem needs stem_kernel >= stem_stride with an even difference")
        if patch < 1 or (stem != "patch" and patch != 1):
            raise ValueError(f"patch must be >= 1 and only used with stem='patch', got {patch}")
        # layout 2: the trunk is unet.UNetTrunk's (blocks named .res / .attn, not .0 / .1); being
        # in the config, it changes the cache key, so no older checkpoint is ever loaded into it.
        self.config = dict(in_channels=in_channels, base=base, mults=tuple(mults),
                           blocks_per_level=blocks_per_level, attention_levels=tuple(attention_levels),
                           dropout=dropout, num_classes=num_classes, stem=stem, patch=patch,
                           stem_kernel=stem_kernel, stem_stride=stem_stride, stem_channels=stem_channels,
                           layout=2)
        if v_from_x0 is not None:  # recorded only when used: a plain v-output net's config lacks it
            from ..diffusion.schedules import NoiseSchedule

            ab = NoiseSchedule.make(v_from_x0, schedule_T).alpha_bars
            self.config.update(v_from_x0=v_from_x0, schedule_T=schedule_T)
            self.register_buffer("sched_a", ab.sqrt().float(), persistent=False)        # a_t = sqrt(abar_t)
            self.register_buffer("sched_s", (1 - ab).sqrt().float(), persistent=False)  # s_t = sqrt(1 - abar_t)
        emb_dim = self._build_embedding(base, num_classes)
        c_seq = {"conv": in_channels, "patch": in_channels * patch, "strided": stem_channels}[stem]
        if stem == "strided":  # L -> L / stride: out length (L + 2 pad - k) / s + 1 = L / s
            pad = (stem_kernel - stem_stride) // 2
            self.encode = nn.Conv1d(in_channels, stem_channels, stem_kernel, stem_stride, pad)
            self.decode = nn.ConvTranspose1d(stem_channels, in_channels, stem_kernel, stem_stride, pad)
        self.stem_conv = nn.Conv1d(c_seq, base, 3, padding=1)
        ch = self._build_trunk(1, base, emb_dim, mults, blocks_per_level, attention_levels, dropout)
        self.head = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv1d(ch, c_seq, 3, padding=1))
        if stem != "strided":  # start by predicting 0 (a strided stem's decoder follows the head)
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)
        if positions:  # recorded only when used, like v_from_x0
            # Convolutions and attention are blind to *where* in the window they are (attention
            # is permutation-equivariant; only the zero padding at the ends leaks a little). A
            # sinusoidal code of each position, mapped by a learned linear layer and added to the
            # stem's output, tells every later layer where it is: the clip's centre, its ends.
            self.config["positions"] = True
            self.pos_proj = nn.Linear(base, base)

    @property
    def length_factor(self) -> int:
        """Input lengths must be multiples of this."""
        c = self.config
        shorten = {"conv": 1, "patch": c["patch"], "strided": c["stem_stride"]}[c["stem"]]
        return shorten * 2 ** (len(c["mults"]) - 1)

    def shorten(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c["stem"] == "patch":  # [B, C, L] -> [B, C, L/p, p] -> [B, C p, L/p]
            b, ch, n = x.shape
            return x.reshape(b, ch, n // c["patch"], c["patch"]).permute(0, 1, 3, 2).reshape(b, ch * c["patch"], -1)
        if c["stem"] == "strided":
            return self.encode(x)
        return x

    def lengthen(self, h: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c["stem"] == "patch":  # the exact inverse of ``shorten``
            b, cp, m = h.shape
            p = c["patch"]
            return h.reshape(b, cp // p, p, m).permute(0, 1, 3, 2).reshape(b, cp // p, m * p)
        if c["stem"] == "strided":
            return self.decode(h)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.config["in_channels"]:
            raise ValueError(f"expected x of shape [B, {self.config['in_channels']}, L], got {tuple(x.shape)}")
        if x.shape[-1] % self.length_factor:
            raise ValueError(f"length {x.shape[-1]} must be a multiple of {self.length_factor} for this U-Net")
        emb = self.embed(torch.as_tensor(t, device=x.device), labels, x.shape[0])
        h = self.stem_conv(self.shorten(x))
        if self.config.get("positions"):  # + W pe(i) at position i: [L', base] -> [1, base, L']
            pe = timestep_embedding(torch.arange(h.shape[-1], device=h.device), self.config["base"])
            h = h + self.pos_proj(pe).T[None].to(h.dtype)
        out = self.lengthen(self.head(self._trunk(h, emb)))
        if self.config.get("v_from_x0"):  # out is x0_hat: return v = (a_t x_t - x0_hat) / s_t
            tt = torch.as_tensor(t, device=x.device).long().expand(x.shape[0])
            a, s = self.sched_a[tt][:, None, None], self.sched_s[tt][:, None, None]
            return (a * x - out.float()) / s
        return out
