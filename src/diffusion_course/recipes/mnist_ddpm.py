"""The chapter-05 MNIST model in one place: its recipe, its reference checkpoint, the sampler
every chapter draws digits with, and the one function every later chapter and benchmark gets
the model from. The data split it trains on is ``data.mnist``'s (``training_images``).

``load_mnist_model(profile, model)`` returns either the **reference** model, trained longer by
``python -m diffusion_course.recipes.references mnist-ddpm`` and shipped with the package, or the
**student**'s own, trained (and cached) by chapter 05's settings for the profile, with any
chapter-05 overrides the runner was given (``-p 05:TRAIN_STEPS 3000``) so that every chapter
sees the model chapter 05 trained. The class-conditional twin of chapter 09 comes the same way
(``conditional=True``).
"""
from __future__ import annotations

import torch

from ..course.settings import MODELS, Settings, chapter_settings, train_config_from
from ..data.mnist import data_spec, training_images
from ..diffusion.sampling import sample
from ..models.unet import UNet
from ..training.cache import load_or_train
from ..training.device import autocast, pick_device
from ..training.loop import TrainConfig
from ..training.references import load_reference

NUM_CLASSES = 10  # digits 0-9; the conditional U-Net's label 10 is "no label" (the null label)
LABEL_DROPOUT = 0.1  # probability of training the conditional model on the null label

# The reference models: chapter 05's `cpu` recipe trained longer, with a slower EMA. Trained
# and exported by `python -m diffusion_course.recipes.references mnist-ddpm` (and `mnist-cond`).
REFERENCE_RECIPES = {
    "mnist-ddpm": {"profile": "cpu", "conditional": False,
                   "overrides": {"train_steps": 24_000, "ema_decay": 0.999, "precision": "bf16"}},
    "mnist-cond": {"profile": "cpu", "conditional": True,
                   "overrides": {"train_steps": 6_000, "ema_decay": 0.999, "precision": "bf16"}},
}


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------------------
def make_unet(cfg: Settings, num_classes: int | None = None, patch: int | None = None) -> UNet:
    """The chapter-05 U-Net for these (chapter-05) settings (``patch`` overrides ``cfg.patch``)."""
    # Levels: 28 -> 14 -> 7 at full resolution, or 14 -> 7 after folding 2x2 patches;
    # self-attention only at 7x7 (49 tokens), where it is cheap.
    patch = cfg.patch if patch is None else patch
    mults = (1, 2, 2) if patch == 1 else (1, 2)
    return UNet(base=cfg.base_width, mults=mults, blocks_per_level=1, patch=patch,
                attention_levels=(len(mults) - 1,), num_classes=num_classes)


def train_config(cfg: Settings, conditional: bool = False) -> TrainConfig:
    """The chapter-05 recipe: the knobs, a linear schedule with T = 1000; the conditional twin
    also replaces each label by the null label with probability ``LABEL_DROPOUT``, so one
    network learns both eps(x_t, t, y) and the unconditional eps(x_t, t) guidance needs."""
    return train_config_from(cfg, schedule="linear", T=1000,
                             label_dropout=LABEL_DROPOUT if conditional else 0.0)


def snapshot_steps(train_steps: int) -> tuple[int, ...]:
    """Steps after which chapter 05 keeps the EMA weights: 5%, 15%, 40% and 100% of training."""
    return tuple(sorted({max(1, round(f * train_steps)) for f in (0.05, 0.15, 0.4, 1.0)}))


def train_mnist_model(cfg: Settings, conditional: bool = False, progress: bool = True,
                      max_seconds: float | None = None):
    """(EMA model, info) for these chapter-05 settings, trained if not cached (cache names
    ``mnist-ddpm`` / ``mnist-cond``); ``info["ema_history"]`` holds the EMA weights after the
    steps of ``snapshot_steps`` (unconditional model only)."""
    keep = () if conditional else snapshot_steps(cfg.train_steps)
    tcfg = train_config(cfg, conditional)
    model, info = load_or_train(
        "mnist-cond" if conditional else "mnist-ddpm",
        lambda: make_unet(cfg, NUM_CLASSES if conditional else None),
        tcfg, lambda: training_images(cfg.n_train), data_spec(cfg.n_train),
        device=cfg.device, progress=progress, max_seconds=max_seconds, keep_ema_at=keep)
    return model, {**info, "source": "student", "train_config": tcfg, "settings": cfg.as_dict()}


# ---------------------------------------------------------------------------------------
# The one owner
# ---------------------------------------------------------------------------------------
def reference_settings(name: str) -> Settings:
    """The chapter-05 settings of a reference model (runner overrides never apply to it)."""
    recipe = REFERENCE_RECIPES[name]
    return chapter_settings("05", recipe["profile"], runner_overrides=False, **recipe["overrides"])


def train_reference(name: str, progress: bool = True):
    """(EMA model, info) of a reference recipe, trained now if not cached (resumable): what
    ``python -m diffusion_course.recipes.references mnist-ddpm`` runs before it writes the file."""
    return train_mnist_model(reference_settings(name), REFERENCE_RECIPES[name]["conditional"], progress)


def load_mnist_model(profile: str = "auto", model: str = "reference", conditional: bool = False,
                     progress: bool = True, max_seconds: float | None = None, **overrides):
    """(EMA U-Net in eval mode, info) of the chapter-05 model, or of its class-conditional twin.

    ``model="reference"``: the model shipped with the course (``REFERENCE_RECIPES``), loaded
    offline in a second. ``model="student"``: chapter 05's settings for ``profile`` with
    ``overrides`` (and the runner's chapter-05 overrides), trained now if not cached.
    ``info["train_config"]`` is the recipe (schedule, kind, precision) the samplers need;
    ``info["source"]`` says which model this is.
    """
    if model not in MODELS:
        raise ValueError(f"unknown MNIST model {model!r}; allowed: {', '.join(MODELS)}")
    if model == "student":
        return train_mnist_model(chapter_settings("05", profile, **overrides), conditional,
                                 progress=progress, max_seconds=max_seconds)
    if overrides:
        raise ValueError(f"the reference model has fixed settings; overrides {sorted(overrides)} "
                         f"apply to model='student' only")
    name = "mnist-cond" if conditional else "mnist-ddpm"
    cfg = reference_settings(name)
    tcfg = train_config(cfg, conditional)
    net, info = load_reference(name, make_unet(cfg, NUM_CLASSES if conditional else None), tcfg,
                               data_spec(cfg.n_train))
    return net.to(pick_device()).eval(), {**info, "source": "reference", "train_config": tcfg}


def sample_digits(model, tcfg: TrainConfig, n: int, steps: int, eta: float, generator: torch.Generator,
                  device: torch.device | str = "cpu", batch_size: int = 250,
                  labels: torch.Tensor | None = None, guidance: float | None = None,
                  noise=None, order: int = 1) -> torch.Tensor:
    """``n`` digits [n, 1, 28, 28] from ``model`` (trained with ``tcfg``), in batches, with the
    respaced sampler (``eta`` = 1 ancestral, 0 DDIM; ``order`` = 2 DPM-Solver++(2M)) at the
    training precision; float32.
    For the conditional model, ``labels`` [n] and the guidance weight ``guidance``;
    ``noise``: the law of x_T and of every step's z (``diffusion.sampling.sample``; chapter 14)."""
    schedule, chunks = tcfg.noise_schedule(), []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        extra = {} if labels is None else {"labels": labels[i:i + b].to(device), "guidance": guidance}
        with autocast(tcfg.precision, device):
            chunks.append(sample(model, (b, 1, 28, 28), schedule, steps=steps, eta=eta,
                                 kind=tcfg.kind, generator=generator, device=device, noise=noise,
                                 order=order, **extra).x0.float())
    return torch.cat(chunks)
