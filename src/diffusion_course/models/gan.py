"""The generators and discriminators the course's GAN loop (``training.gan``) trains:

    Generator, Discriminator         small MLPs for 2-D points (chapter 03)
    DCGANGenerator                   z [B, latent] -> image [B, 1, 28, 28] in [-1, 1]: a linear
                                     map to 7x7, two transposed convolutions up to 28x28
                                     (Radford et al. 2016)
    DCGANDiscriminator               image -> one logit, two strided convolutions down to 7x7
"""
from __future__ import annotations

import torch
import torch.nn as nn


def _mlp(d_in: int, hidden: int, depth: int, d_out: int, act: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(d_in if i == 0 else hidden, hidden), act()]
    return nn.Sequential(*layers, nn.Linear(hidden, d_out))


class Generator(nn.Module):
    """z ~ N(0, I_latent) -> a point in 2-D, through a ReLU MLP: one network call per sample."""

    def __init__(self, latent_dim: int = 2, hidden: int = 128, depth: int = 3, dim: int = 2):
        super().__init__()
        self.latent_dim = latent_dim
        self.net = _mlp(latent_dim, hidden, depth, dim, nn.ReLU)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.latent_dim, generator=generator)
        return self(z.to(next(self.parameters()).device)).cpu()


class Discriminator(nn.Module):
    """A point -> one logit (real vs generated), through a LeakyReLU MLP."""

    def __init__(self, hidden: int = 128, depth: int = 3, dim: int = 2):
        super().__init__()
        self.net = _mlp(dim, hidden, depth, 1, lambda: nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class DCGANGenerator(nn.Module):
    """z ~ N(0, I_latent) -> a 28x28 image in [-1, 1]: linear to [2w, 7, 7], then two
    transposed convolutions (kernel 4, stride 2) to 14x14 and 28x28, BatchNorm and ReLU
    between, tanh at the end. One network call per image."""

    def __init__(self, latent_dim: int = 64, width: int = 64):
        super().__init__()
        self.latent_dim, self.width = latent_dim, width
        self.project = nn.Sequential(nn.Linear(latent_dim, 2 * width * 49, bias=False),
                                     nn.BatchNorm1d(2 * width * 49), nn.ReLU())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, bias=False),   # 7 -> 14
            nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1), nn.Tanh())           # 14 -> 28

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(self.project(z).view(-1, 2 * self.width, 7, 7))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.latent_dim, generator=generator)
        return self(z.to(next(self.parameters()).device)).cpu()


class DCGANDiscriminator(nn.Module):
    """A 28x28 image -> one logit (real vs generated): two strided convolutions (kernel 4,
    stride 2) to 14x14 and 7x7 with LeakyReLU(0.2), then a linear layer."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),                 # 28 -> 14
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),         # 14 -> 7
            nn.Flatten(), nn.Linear(2 * width * 49, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)
