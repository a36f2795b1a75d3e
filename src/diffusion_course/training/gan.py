"""The course's GAN, the generator diffusion models are compared with: one training loop for
any generator and discriminator (``models.gan`` has the networks).

    train_gan        the standard non-saturating GAN (Goodfellow et al. 2014), one D step and
                     one G step per iteration, optionally stopped by a wall-time budget (to
                     train for the same time as a diffusion model: chapter 13)
    load_or_train_gan  a generator trained for a wall-time budget, cached like the course's
                     diffusion models (chapter 13 trains it for as long as a diffusion model)

Chapter 03's 2-D GAN (``recipes.toy2d.train_toy_gan``) runs the same loop with small MLPs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.paths import cache_dir
from .cache import cache_key, cached, seeded
from .checkpoints import FORMAT, checked


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


def load_or_train_gan(name: str, make_generator: Callable[[], nn.Module],
                      make_discriminator: Callable[[], nn.Module], data: Callable[[], torch.Tensor],
                      max_seconds: float, recipe: dict, seed: int = 0, progress: bool = True,
                      device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """(G in eval mode, info) of a GAN trained for ``max_seconds`` of wall time with ``recipe``
    (``batch_size``, ``lr``), loaded from the cache if trained before. G and D are built under
    ``seed`` and ``seed + 1``. The number of steps a wall-time budget buys depends on the
    machine, so it is recorded (``info["steps"]``), not set; the cache file
    ``<cache>/<name>-<hash>.pt`` is keyed by the architecture, the recipe and the budget."""
    G, D = seeded(make_generator, seed), seeded(make_discriminator, seed + 1)
    architecture = {"G": repr(G), "D": repr(D)}
    path = cache_dir() / f"{name}-{cache_key(architecture, recipe, {'seconds': max_seconds, 'seed': seed})}.pt"
    record = lambda blob: {"steps": blob["step"], "seconds": blob["seconds"],
                           "g_losses": blob["g_losses"].tolist(), "d_losses": blob["d_losses"].tolist()}

    def load(blob):
        blob = checked(blob, path)
        G.load_state_dict(blob["generator"])
        return record(blob)

    def compute():
        run = train_gan(G, D, data(), steps=10**9, max_seconds=max_seconds, seed=seed,
                        progress=progress, device=device, **recipe)
        blob = {"format": FORMAT, "generator": G.state_dict(), "step": run.steps, "seconds": run.seconds,
                "g_losses": torch.tensor(run.g_losses), "d_losses": torch.tensor(run.d_losses)}
        return record(blob), blob

    info, entry = cached(path, load, compute)
    return G.to(device).eval(), {**info, "path": entry["path"], "trained_now": entry["trained_now"]}
