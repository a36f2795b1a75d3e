"""Convolutional autoencoders for 28x28 images: chapter 04 trains ``Autoencoder`` as a denoiser,
chapter 10 makes it a VAE (``LatentAutoencoder``) and compresses MNIST to a latent grid for
latent diffusion (``LatentCodec``: the autoencoder plus the shift and scale of its latents).

    encode: [B, 1, 28, 28] --conv--> 28x28 --stride 2--> 14x14 --stride 2--> 7x7 --1x1--> [B, 4, 7, 7]
    decode: [B, 4, 7, 7]   --conv--> 7x7 --up x2--> 14x14 --up x2--> 28x28 --conv--> [B, 1, 28, 28]

Every hidden layer is conv 3x3 -> GroupNorm -> SiLU. The latent grid has
``latent_channels`` x 7 x 7 numbers (196 for 4 channels, a quarter of the 784 pixels), and
there are no skip connections: whatever the decoder draws must pass through it.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """conv 3x3 (stride 1 keeps the size, stride 2 halves it) -> GroupNorm -> SiLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1),
                         nn.GroupNorm(min(8, c_out), c_out), nn.SiLU())


def _up_block(c_in: int, c_out: int) -> nn.Sequential:
    """Nearest-neighbour upsampling x2, then a conv block: doubles the size."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), *_block(c_in, c_out))


class Autoencoder(nn.Module):
    """Conv encoder to a ``latent_channels`` x H/4 x W/4 grid and a mirror-image decoder.

    ``channels = (c1, c2)``: widths at full and at half resolution (the 7x7 level uses c2).
    ``forward(x)`` is ``decode(encode(x))``; the output is unbounded (trained towards [-1, 1]).
    """

    def __init__(self, in_channels: int = 1, channels: tuple[int, int] = (32, 64),
                 latent_channels: int = 4):
        super().__init__()
        c1, c2 = channels
        self.config = dict(in_channels=in_channels, channels=tuple(channels),
                           latent_channels=latent_channels)
        self.encoder = nn.Sequential(
            _block(in_channels, c1),        # 28x28
            _block(c1, c2, stride=2),       # 14x14
            _block(c2, c2, stride=2),       # 7x7
            _block(c2, c2),
            nn.Conv2d(c2, latent_channels, 1),
        )
        self.decoder = nn.Sequential(
            _block(latent_channels, c2),    # 7x7
            _block(c2, c2),
            _up_block(c2, c2),              # 14x14
            _up_block(c2, c1),              # 28x28
            nn.Conv2d(c1, in_channels, 3, padding=1),
        )

    def latent_shape(self, height: int = 28, width: int = 28) -> tuple[int, int, int]:
        """Shape of one image's latent grid (each stride-2 conv maps n to ceil(n / 2))."""
        return (self.config["latent_channels"], (height + 3) // 4, (width + 3) // 4)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class LatentAutoencoder(Autoencoder):
    """Chapter 04's autoencoder with, if ``variational``, a Gaussian encoder q(z | x).

    ``encode(x)`` is deterministic: the mean mu(x) for a VAE (what latent diffusion
    trains on), the code itself for a plain autoencoder. ``posterior(x)`` gives
    (mu, log sigma^2) (log sigma^2 is None for a plain autoencoder).
    """

    def __init__(self, in_channels: int = 1, channels: tuple[int, int] = (32, 64),
                 latent_channels: int = 4, variational: bool = True):
        super().__init__(in_channels, channels, latent_channels)
        self.config = {**self.config, "variational": bool(variational)}
        if variational:  # the last 1x1 conv outputs mean and log-variance: 2 x latent_channels
            self.encoder[-1] = nn.Conv2d(channels[1], 2 * latent_channels, 1)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.encoder(x)
        if not self.config["variational"]:
            return h, None
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]


class LatentCodec(nn.Module):
    """An autoencoder plus the shift and scale of its latents: images <-> scaled latents."""

    def __init__(self, autoencoder: LatentAutoencoder, shift: float = 0.0, scale: float = 1.0):
        super().__init__()
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.autoencoder = autoencoder.eval()
        self.shift, self.scale = float(shift), float(scale)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.autoencoder.latent_shape()

    def to_scaled(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.shift) * self.scale            # z_s = (z - shift) * scale

    def from_scaled(self, z_s: torch.Tensor) -> torch.Tensor:
        return z_s / self.scale + self.shift            # z = z_s / scale + shift

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Scaled latents of images in [-1, 1] (the encoder's mean; in chunks, on x's device)."""
        return torch.cat([self.to_scaled(self.autoencoder.encode(c)) for c in x.split(batch_size)])

    @torch.no_grad()
    def decode(self, z_s: torch.Tensor) -> torch.Tensor:
        """Images from scaled latents: one pass of the decoder, clipped to [-1, 1]."""
        return self.autoencoder.decode(self.from_scaled(z_s)).clamp(-1, 1)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
