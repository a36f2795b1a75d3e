"""The course's GAN, the generator diffusion models are compared with: one training loop for
any generator and discriminator, and a small DCGAN for MNIST.

    train_gan        the standard non-saturating GAN (Goodfellow et al. 2014), one D step and
                     one G step per iteration, optionally stopped by a wall-time budget (to
                     train for the same time as a diffusion model: chapter 13)
    DCGANGenerator   z [B, latent] -> image [B, 1, 28, 28] in [-1, 1]: a linear map to 7x7,
                     two transposed convolutions up to 28x28 (Radford et al. 2016)
    DCGANDiscriminator image -> one logit, two strided convolutions down to 7x7

    load_or_train_gan  a generator trained for a wall-time budget, cached like the course's
                     diffusion models (chapter 13 trains it for as long as a diffusion model)

Chapter 03's 2-D GAN (``toy2d.train_toy_gan``) runs the same loop with small MLPs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .training import cache_dir, cache_key, cache_lock, read_checkpoint, save_atomically


@dataclass
class GANRun:
    generator: nn.Module
    discriminator: nn.Module
    d_losses: list[float] = field(default_factory=list)
    g_losses: list[float] = field(default_factory=list)
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)  # step -> G(z_fixed)
    seconds: float = 0.0
    steps: int = 0


def train_gan(G: nn.Module, D: nn.Module, data: torch.Tensor, steps: int, batch_size: int = 256,
              lr: float = 1e-3, seed: int = 0, max_seconds: float | None = None,
              snapshot_every: int | None = None, n_snapshot: int = 1000, progress: bool = False,
              device: torch.device | str = "cpu") -> GANRun:
    """Train ``G`` (with a ``latent_dim`` attribute) against ``D``, Adam(lr, betas=(0.5, 0.999)):

        D step:  minimise  -log D(x) - log(1 - D(G(z)))     (binary cross-entropy)
        G step:  minimise  -log D(G(z))                     (the non-saturating loss)

    for ``steps`` iterations, or fewer when ``max_seconds`` of wall time have passed (the run
    records how many it made). ``snapshot_every`` keeps G(z) for a fixed batch of
    ``n_snapshot`` latents every that many steps (and at the end). Deterministic under
    ``seed`` on the CPU (for a given number of steps).
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got {steps} and {batch_size}")
    g = torch.Generator().manual_seed(seed)
    G, D = G.to(device).train(), D.to(device).train()
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    data = data.float().to(device)
    # the snapshot latents come from their own generator: training does not depend on them
    z_fixed = torch.randn(n_snapshot, G.latent_dim, generator=torch.Generator().manual_seed(seed + 1)).to(device)
    run = GANRun(G, D)
    ones = torch.ones(batch_size, device=device)
    zeros = torch.zeros(batch_size, device=device)
    start = time.perf_counter()
    for step in tqdm(range(1, steps + 1), desc="GAN", disable=not progress, mininterval=2):
        real = data[torch.randint(0, data.shape[0], (batch_size,), generator=g).to(device)]
        z = torch.randn(batch_size, G.latent_dim, generator=g).to(device)
        fake = G(z)
        d_loss = (F.binary_cross_entropy_with_logits(D(real), ones)
                  + F.binary_cross_entropy_with_logits(D(fake.detach()), zeros))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = F.binary_cross_entropy_with_logits(D(fake), ones)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        run.d_losses.append(d_loss.item())
        run.g_losses.append(g_loss.item())
        run.steps = step
        out_of_time = max_seconds is not None and time.perf_counter() - start > max_seconds
        if snapshot_every and (step % snapshot_every == 0 or step == steps or out_of_time):
            with torch.no_grad():
                run.snapshots[step] = G(z_fixed).cpu()
        if out_of_time:
            break
    run.seconds = time.perf_counter() - start
    G.eval(), D.eval()
    return run


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


def load_or_train_gan(name: str, G: nn.Module, D: nn.Module, data: Callable[[], torch.Tensor],
                      max_seconds: float, recipe: dict, seed: int = 0, progress: bool = True,
                      device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """(G in eval mode, info) of a GAN trained for ``max_seconds`` of wall time with ``recipe``
    (``batch_size``, ``lr``), loaded from the cache if trained before. The number of steps a
    wall-time budget buys depends on the machine, so it is recorded (``info["steps"]``), not
    set; the cache file ``<cache>/<name>-<hash>.pt`` is keyed by the architecture, the recipe
    and the budget."""
    architecture = {"G": repr(G), "D": repr(D)}
    path = cache_dir() / f"{name}-{cache_key(architecture, recipe, {'seconds': max_seconds, 'seed': seed})}.pt"
    with cache_lock(path):
        if path.exists():
            blob = read_checkpoint(path)
            G.load_state_dict(blob["generator"])
            return G.to(device).eval(), {"path": str(path), "trained_now": False, "steps": blob["step"],
                                         "seconds": blob["seconds"], "g_losses": blob["g_losses"].tolist(),
                                         "d_losses": blob["d_losses"].tolist()}
        run = train_gan(G, D, data(), steps=10**9, max_seconds=max_seconds, seed=seed,
                        progress=progress, device=device, **recipe)
        save_atomically({"format": "diffusion-course-v1", "generator": G.state_dict(), "step": run.steps,
                         "seconds": run.seconds, "g_losses": torch.tensor(run.g_losses),
                         "d_losses": torch.tensor(run.d_losses)}, path)
        return G.eval(), {"path": str(path), "trained_now": True, "steps": run.steps, "seconds": run.seconds,
                          "g_losses": run.g_losses, "d_losses": run.d_losses}
