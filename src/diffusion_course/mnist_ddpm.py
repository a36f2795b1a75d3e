"""The chapter-05 MNIST model in one place, so chapters 05-13 and the benchmarks build,
train and cache exactly the same thing under a given profile.

Data: the MNIST training split when it is available. Offline with only the test split
(CI, this course's build machines), ``split="test"`` trains on its first 9,000 images and
keeps the last 1,000 as held-out data for evaluation; every report says which it used.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from .mnist import load_mnist, split_available
from .sampling import sample
from .settings import Settings, chapter_settings, resolve_precision
from .training import TrainConfig, autocast, load_or_train
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


def benchmark_settings(profile: str, overrides: dict) -> Settings:
    """Chapter-05 settings for the benchmarks: the profile's, with ``overrides``; offline
    without the training split (unless one is asked for), the first 9,000 test images."""
    if "train_split" not in overrides and not split_available("train"):
        overrides = {**overrides, "train_split": "test", "n_train": 10_000 - HELD_OUT}
    return chapter_settings("05", profile, **overrides)


def held_out_images() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_mnist("test")
    return x[-HELD_OUT:], y[-HELD_OUT:]


def make_unet(cfg: Settings, num_classes: int | None = None, patch: int | None = None) -> UNet:
    """The chapter-05 U-Net for these settings (``patch`` overrides ``cfg.patch``)."""
    # Levels: 28 -> 14 -> 7 at full resolution, or 14 -> 7 after folding 2x2 patches;
    # self-attention only at 7x7 (49 tokens), where it is cheap.
    patch = cfg.patch if patch is None else patch
    mults = (1, 2, 2) if patch == 1 else (1, 2)
    return UNet(base=cfg.base_width, mults=mults, blocks_per_level=1, patch=patch,
                attention_levels=(len(mults) - 1,), num_classes=num_classes)


def train_config(cfg: Settings) -> TrainConfig:
    return TrainConfig(steps=cfg.train_steps, batch_size=cfg.batch_size, lr=cfg.lr,
                       warmup=min(100, cfg.train_steps // 10), lr_decay="cosine", grad_clip=1.0,
                       ema_decay=cfg.ema_decay, kind=cfg.kind,
                       min_snr_gamma=cfg.min_snr_gamma or None, schedule="linear", T=1000,
                       seed=cfg.seed, precision=resolve_precision(cfg.precision, cfg.device))


def snapshot_steps(train_steps: int) -> tuple[int, ...]:
    """Steps after which chapter 05 keeps the EMA weights: 5%, 15%, 40% and 100% of training."""
    return tuple(sorted({max(1, round(f * train_steps)) for f in (0.05, 0.15, 0.4, 1.0)}))


def load_or_train_mnist_ddpm(cfg: Settings, progress: bool = True, max_seconds: float | None = None):
    """(EMA model, info) of the chapter-05 model for these settings, trained if not cached.

    ``info["ema_history"]`` maps the steps of ``snapshot_steps`` to the EMA weights then.
    """
    spec = data_spec(cfg.train_split, cfg.n_train)
    return load_or_train("mnist-ddpm", lambda: make_unet(cfg), train_config(cfg),
                         lambda: training_images(cfg.train_split, cfg.n_train), spec,
                         device=cfg.device, progress=progress, max_seconds=max_seconds,
                         keep_ema_at=snapshot_steps(cfg.train_steps))


def sample_digits(model, tcfg: TrainConfig, n: int, steps: int, eta: float, generator: torch.Generator,
                  device: torch.device | str = "cpu", batch_size: int = 250) -> torch.Tensor:
    """``n`` digits [n, 1, 28, 28] from ``model`` (trained with ``tcfg``), in batches, with the
    respaced sampler (``eta`` = 1 ancestral, 0 DDIM) at the training precision; float32."""
    schedule, chunks = tcfg.noise_schedule(), []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        with autocast(tcfg.precision, device):
            chunks.append(sample(model, (b, 1, 28, 28), schedule, steps=steps, eta=eta,
                                 kind=tcfg.kind, generator=generator, device=device).x0.float())
    return torch.cat(chunks)


# ---------------------------------------------------------------------------------------
# The class-conditional variant (chapter 09): the same U-Net, recipe and data, plus labels
# ---------------------------------------------------------------------------------------
NUM_CLASSES = 10  # digits 0-9; the U-Net's label 10 is "no label" (the null label)


def cond_train_config(cfg: Settings, label_dropout: float = 0.1) -> TrainConfig:
    """The chapter-05 recipe with label dropout: each training label is replaced by the null
    label with probability ``label_dropout``, so one network learns both eps(x_t, t, y) and
    the unconditional eps(x_t, t) that classifier-free guidance needs."""
    if not 0 < label_dropout < 1:
        raise ValueError(f"label_dropout must lie in (0, 1) for guidance to have an "
                         f"unconditional branch, got {label_dropout}")
    return replace(train_config(cfg), label_dropout=label_dropout)


def load_or_train_mnist_cond(cfg: Settings, label_dropout: float = 0.1, progress: bool = True,
                             max_seconds: float | None = None):
    """(EMA model, info) of the class-conditional chapter-05 model for these (chapter-05)
    settings, trained on (image, digit) pairs if not cached (cache name ``mnist-cond``)."""
    spec = data_spec(cfg.train_split, cfg.n_train)
    return load_or_train("mnist-cond", lambda: make_unet(cfg, num_classes=NUM_CLASSES),
                         cond_train_config(cfg, label_dropout),
                         lambda: training_images(cfg.train_split, cfg.n_train), spec,
                         device=cfg.device, progress=progress, max_seconds=max_seconds)
