"""A small convolutional autoencoder for 28x28 images: chapter 04 trains it as a denoiser,
chapter 10 reuses it to compress MNIST to a latent grid for latent diffusion.

    encode: [B, 1, 28, 28] --conv--> 28x28 --stride 2--> 14x14 --stride 2--> 7x7 --1x1--> [B, 4, 7, 7]
    decode: [B, 4, 7, 7]   --conv--> 7x7 --up x2--> 14x14 --up x2--> 28x28 --conv--> [B, 1, 28, 28]

Every hidden layer is conv 3x3 -> GroupNorm -> SiLU. The latent grid has
``latent_channels`` x 7 x 7 numbers (196 for 4 channels, a quarter of the 784 pixels), and
there are no skip connections: whatever the decoder draws must pass through it.
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm


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
    (``settings.chapter_settings("04", ...)``): loaded from the course's checkpoint cache, or
    else trained now with chapter 04's recipe and cached. The recipe: weights initialised under
    ``torch.manual_seed(cfg.seed)``, then ``train_autoencoder`` on the first ``cfg.n_train``
    training digits with sigma ~ U(0, ``cfg.max_noise_std``) per image. Chapter 12 reuses it as
    the plug-and-play prior. ``info`` has the loss of every step and the training seconds."""
    from .mnist_ddpm import data_spec, training_images
    from .training import cache_dir, cache_key, cache_lock, read_checkpoint, save_atomically

    torch.manual_seed(cfg.seed)
    model = Autoencoder(channels=(cfg.width, 2 * cfg.width), latent_channels=cfg.latent_channels)
    recipe = {"steps": cfg.train_steps, "batch_size": cfg.batch_size, "lr": cfg.lr,
              "noise_std": [0.0, cfg.max_noise_std], "seed": cfg.seed}
    path = cache_dir() / f"denoising-autoencoder-{cache_key(model.config, recipe, data_spec(cfg.n_train))}.pt"
    with cache_lock(path):   # a second process that needs it waits, then loads it
        if path.exists():
            blob = read_checkpoint(path)
            model.load_state_dict(blob["model"])
            return model.to(device).eval(), {"path": str(path), "trained_now": False,
                                             "losses": blob["losses"].tolist(), "seconds": blob["seconds"]}
        model = model.to(device)
        start = time.perf_counter()
        losses = train_autoencoder(model, training_images(cfg.n_train)[0], cfg.train_steps, cfg.batch_size,
                                   cfg.lr, noise_std=(0.0, cfg.max_noise_std),
                                   generator=torch.Generator().manual_seed(cfg.seed), progress=progress,
                                   desc="autoencoder")
        seconds = time.perf_counter() - start
        save_atomically({"format": "diffusion-course-v1", "model": model.state_dict(),
                         "losses": torch.tensor(losses), "seconds": seconds, "recipe": recipe}, path)
        return model.eval(), {"path": str(path), "trained_now": True, "losses": losses, "seconds": seconds}
