"""The network of the order-agnostic autoregressive diffusion model (``diffusion.ardm``)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .unet import UNetTrunk, _norm


class ARDMNet(UNetTrunk):
    """The course's U-Net trunk (``unet.UNetTrunk``) as an ARDM: (known pixel values, mask)
    -> one Bernoulli logit per pixel.

    Input channels: the pixels as 2x - 1 where known and 0 where not, the mask, and (with
    ``coords``) two fixed maps of the row and column position in [-1, 1], so that a small
    network can tell the border from the centre when nothing is known yet. The U-Net's time
    embedding carries the fraction of known pixels (on its 0..1000 scale). The head starts
    at zero: every logit 0, p = 1/2, exactly 1 bit per pixel before training.
    """

    def __init__(self, base: int = 32, mults: tuple[int, ...] = (1, 2, 2), blocks_per_level: int = 1,
                 attention_levels: tuple[int, ...] = (2,), dropout: float = 0.0, coords: bool = True,
                 size: int = 28):
        super().__init__()
        self.config = dict(base=base, mults=tuple(mults), blocks_per_level=blocks_per_level,
                           attention_levels=tuple(attention_levels), dropout=dropout,
                           coords=coords, size=size)
        emb_dim = self._build_embedding(base, None)
        self.stem = nn.Conv2d(2 + 2 * coords, base, 3, padding=1)
        ch = self._build_trunk(2, base, emb_dim, mults, blocks_per_level, attention_levels, dropout)
        self.head = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, 1, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        axis = torch.linspace(-1, 1, size)
        self.register_buffer("grid", torch.stack(torch.meshgrid(axis, axis, indexing="ij"))[None],
                             persistent=False)

    def forward(self, values: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """values, known: [B, 1, H, W] ({0, 1} pixels; True where known) -> logits [B, 1, H, W]."""
        k = known.float()
        b, d = k.shape[0], k[0].numel()
        parts = [(2 * values - 1) * k, k]                 # unknown pixels are 0, known ones +-1
        if self.config["coords"]:
            parts.append(self.grid.expand(b, -1, -1, -1))
        emb = self.embed(k.flatten(1).sum(1) * (1000.0 / d), None, b)   # "time" = share known
        return self.head(self._trunk(self.stem(torch.cat(parts, dim=1)), emb))
