"""Chapter 04's denoising autoencoder: the training loop (noisy images in, clean images out)
and the cached model of a profile, which chapter 12 reuses as the plug-and-play prior.
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.mnist import data_spec, training_images
from ..data.paths import cache_dir
from ..models.autoencoder import Autoencoder
from ..training.cache import cache_key, cached, seeded
from ..training.checkpoints import FORMAT, checked


def add_noise(x: torch.Tensor, std: float | torch.Tensor,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """x + std * eps, eps ~ N(0, I) drawn on the CPU from ``generator`` (reproducible
    on every device); ``std`` is a number or one value per image ([B])."""
    eps = torch.randn(x.shape, generator=generator).to(x.device)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device)
    if std.dim() == 1:
        std = std[:, None, None, None]
    return x + std * eps


def train_autoencoder(model: nn.Module, images: torch.Tensor, steps: int, batch_size: int = 64,
                      lr: float = 2e-3, noise_std: float | tuple[float, float] = 0.0,
                      generator: torch.Generator | None = None, progress: bool = False,
                      desc: str = "autoencoder") -> list[float]:
    """Train ``model`` to map noisy images back to clean ones; return the loss of every step.

    Each step draws ``batch_size`` images x (with replacement), a noise level sigma and
    minimises the mean squared error || model(x + sigma * eps) - x ||^2 with Adam at a
    constant ``lr``. ``noise_std`` is a fixed sigma, or a range ``(lo, hi)`` from which
    every image draws its own sigma uniformly; ``0`` trains a plain autoencoder. All the
    randomness (batches, sigmas, noise) comes from ``generator``. Works on the model's device.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be positive")
    lo, hi = (noise_std, noise_std) if isinstance(noise_std, (int, float)) else noise_std
    if not 0 <= lo <= hi:
        raise ValueError(f"noise_std must be >= 0 or a range 0 <= lo <= hi, got {noise_std!r}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    images = images.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc=desc, disable=not progress, mininterval=1):
        idx = torch.randint(0, len(images), (batch_size,), generator=g).to(device)
        x = images[idx]
        sigma = lo + (hi - lo) * torch.rand(batch_size, generator=g)
        loss = F.mse_loss(model(add_noise(x, sigma, g)), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def load_denoising_autoencoder(cfg, device: torch.device | str = "cpu",
                               progress: bool = True) -> tuple[Autoencoder, dict]:
    """(autoencoder in eval mode, info) of chapter 04 for its settings ``cfg``
    (``course.settings.chapter_settings("04", ...)``): loaded from the course's checkpoint
    cache, or else trained now with chapter 04's recipe and cached. The recipe: weights
    initialised under ``cfg.seed``, then ``train_autoencoder`` on the first ``cfg.n_train``
    training digits with sigma ~ U(0, ``cfg.max_noise_std``) per image. Chapter 12 reuses it as
    the plug-and-play prior. ``info`` has the loss of every step and the training seconds."""
    make = lambda: Autoencoder(channels=(cfg.width, 2 * cfg.width), latent_channels=cfg.latent_channels)
    model = seeded(make, cfg.seed)
    recipe = {"steps": cfg.train_steps, "batch_size": cfg.batch_size, "lr": cfg.lr,
              "noise_std": [0.0, cfg.max_noise_std], "seed": cfg.seed}
    path = cache_dir() / f"denoising-autoencoder-{cache_key(model.config, recipe, data_spec(cfg.n_train))}.pt"

    def load(blob):
        blob = checked(blob, path)
        model.load_state_dict(blob["model"])
        return {"losses": blob["losses"].tolist(), "seconds": blob["seconds"]}

    def compute():
        start = time.perf_counter()
        losses = train_autoencoder(model.to(device), training_images(cfg.n_train)[0], cfg.train_steps,
                                   cfg.batch_size, cfg.lr, noise_std=(0.0, cfg.max_noise_std),
                                   generator=torch.Generator().manual_seed(cfg.seed), progress=progress,
                                   desc="autoencoder")
        seconds = time.perf_counter() - start
        return {"losses": losses, "seconds": seconds}, {
            "format": FORMAT, "model": model.state_dict(), "losses": torch.tensor(losses),
            "seconds": seconds, "recipe": recipe}

    info, entry = cached(path, load, compute)
    return model.to(device).eval(), {**info, "path": entry["path"], "trained_now": entry["trained_now"]}
