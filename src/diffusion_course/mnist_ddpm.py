"""The chapter-05 MNIST model in one place, so chapters 05-13 and the benchmarks build,
train and cache exactly the same thing under a given profile.

Data: the MNIST training split when it is available. Offline with only the test split
(CI, this course's build machines), ``split="test"`` trains on its first 9,000 images and
keeps the last 1,000 as held-out data for evaluation; every report says which it used.
"""
from __future__ import annotations

import torch

from .mnist import load_mnist
from .settings import Settings
from .training import TrainConfig, load_or_train
from .unet import UNet

HELD_OUT = 1000  # images at the end of the test split kept for evaluation when training on it


def data_spec(split: str, n_train: int) -> dict:
    if split == "test":
        return {"dataset": "MNIST", "split": "test", "train_images": f"test[0:{n_train}]",
                "held_out": f"test[{10_000 - HELD_OUT}:10000]"}
    return {"dataset": "MNIST", "split": "train", "train_images": f"train[0:{n_train}]",
            "held_out": "test[9000:10000]"}


def training_images(split: str, n_train: int) -> tuple[torch.Tensor, torch.Tensor]:
    if split == "test" and n_train > 10_000 - HELD_OUT:
        raise ValueError(f"training on the test split leaves {HELD_OUT} images out: n_train <= {10_000 - HELD_OUT}")
    return load_mnist(split, n=n_train)


def held_out_images() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_mnist("test")
    return x[-HELD_OUT:], y[-HELD_OUT:]


def make_unet(cfg: Settings, num_classes: int | None = None) -> UNet:
    # Levels: 28 -> 14 -> 7 at full resolution, or 14 -> 7 after folding 2x2 patches;
    # self-attention only at 7x7 (49 tokens), where it is cheap.
    mults = (1, 2, 2) if cfg.patch == 1 else (1, 2)
    return UNet(base=cfg.base_width, mults=mults, blocks_per_level=1, patch=cfg.patch,
                attention_levels=(len(mults) - 1,), num_classes=num_classes)


def train_config(cfg: Settings) -> TrainConfig:
    return TrainConfig(steps=cfg.train_steps, batch_size=cfg.batch_size, lr=cfg.lr,
                       warmup=100, lr_decay="cosine", grad_clip=1.0, ema_decay=cfg.ema_decay,
                       kind=cfg.kind, min_snr_gamma=cfg.min_snr_gamma or None,
                       schedule="linear", T=1000, seed=cfg.seed)


def load_or_train_mnist_ddpm(cfg: Settings, progress: bool = True, max_seconds: float | None = None):
    """(EMA model, info) of the chapter-05 model for these settings, trained if not cached."""
    spec = data_spec(cfg.train_split, cfg.n_train)
    return load_or_train("mnist-ddpm", lambda: make_unet(cfg), train_config(cfg),
                         lambda: training_images(cfg.train_split, cfg.n_train), spec,
                         device=cfg.device, progress=progress, max_seconds=max_seconds)
