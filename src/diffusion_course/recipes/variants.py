"""Chapter 14's trained models, each cached so a second run of the chapter loads them:

* ``train_noise_mnist``: chapter 05's U-Net and recipe (v-prediction, min-SNR 5, linear
  schedule, T = 1000) trained with Gaussian or with mixture noise under the same budget
  (``training.cache.load_or_train`` with the noise law as an argument and in the cache key);
  ``sample_noise_digits`` samples either with the respaced ancestral sampler, drawing x_T
  and every z from the chosen law;
* ``load_or_train_ardm``: the ARDM (``models.ardm.ARDMNet``) on binarised MNIST;
* ``train_colour_model``: the colour DDPM (``make_colour_unet``) on the profile's
  colour data.

The chapter's knobs (``settings.CHAPTERS["14"]``) are what a student turns: steps, sample
counts, the noise law, the binarisation, the colour data. The sizes of the models and of their
training sets are fixed per profile here (``SIZES``, read with ``sizes(cfg)``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..course.settings import Settings, chapter_settings
from ..data.cifar import colour_data
from ..data.mnist import data_spec, load_binary_mnist, training_images
from ..data.paths import cache_dir
from ..diffusion.ardm import ardm_loss, bits_per_dim
from ..diffusion.mixture_noise import noise_fn
from ..diffusion.sampling import sample
from ..models.ardm import ARDMNet
from ..models.toy2d import MLPDenoiser
from ..models.unet import UNet
from ..training.cache import cache_key, cached, load_or_train, seeded
from ..training.loop import TrainConfig, TrainState, train
from .mnist_ddpm import make_unet, sample_digits


@dataclass(frozen=True)
class Sizes:
    """The sizes of chapter 14's models and training sets in one profile."""

    toy_T: int                # diffusion steps of the 2-D toy models (cosine schedule)
    n_points: int             # training points from the ring of 8 Gaussians
    mnist_n_train: int        # training digits of the two MNIST models (the first of the split)
    mnist_batch_size: int     # digits per step of the MNIST models
    mnist_width: int          # channels of the MNIST U-Net's first level
    mnist_ema_decay: float    # EMA decay of the MNIST models' weights
    ardm_n_train: int         # binarised training digits of the ARDM
    ardm_batch_size: int      # digits per ARDM step (each with its own order and step t)
    ardm_width: int           # channels of the ARDM U-Net's first level
    ardm_lr: float            # learning rate of the ARDM (AdamW, constant)
    colour_n_train: int       # training images of the colour DDPM
    colour_batch_size: int    # images per step of the colour DDPM
    colour_width: int         # channels of the colour U-Net's first level
    colour_ema_decay: float   # EMA decay of the colour model's weights


# Not knobs: these reproduce the chapter's measured runs (and name its cached models); change
# them to re-run a study at another size, not to explore the chapter.
SIZES = {
    "ci": Sizes(toy_T=100, n_points=4_000, mnist_n_train=2_000, mnist_batch_size=32, mnist_width=16,
                mnist_ema_decay=0.99, ardm_n_train=2_000, ardm_batch_size=16, ardm_width=8, ardm_lr=2e-3,
                colour_n_train=512, colour_batch_size=32, colour_width=16, colour_ema_decay=0.99),
    "cpu": Sizes(toy_T=100, n_points=20_000, mnist_n_train=60_000, mnist_batch_size=64, mnist_width=16,
                 mnist_ema_decay=0.995, ardm_n_train=20_000, ardm_batch_size=32, ardm_width=16, ardm_lr=2e-3,
                 colour_n_train=5_000, colour_batch_size=32, colour_width=16, colour_ema_decay=0.995),
    "gpu": Sizes(toy_T=1000, n_points=100_000, mnist_n_train=60_000, mnist_batch_size=128, mnist_width=32,
                 mnist_ema_decay=0.999, ardm_n_train=60_000, ardm_batch_size=64, ardm_width=64, ardm_lr=1e-3,
                 colour_n_train=50_000, colour_batch_size=128, colour_width=64, colour_ema_decay=0.9995),
}


def sizes(cfg: Settings) -> Sizes:
    """The model and data sizes of ``cfg``'s profile."""
    return SIZES[cfg.profile]


def noise_spec(noise: str, p: float, phi: float) -> dict:
    """What names a noise law in a cache key (p and phi only matter for the mixture)."""
    return {"noise": noise} if noise == "gaussian" else {"noise": noise, "p": float(p), "phi": float(phi)}


# ---------------------------------------------------------------------------------------
# Mixture against Gaussian noise on MNIST
# ---------------------------------------------------------------------------------------
def recipe_with_budget(cfg: Settings, steps: int, batch_size: int, ema_decay: float) -> TrainConfig:
    """Chapter 05's recipe (v-objective, min-SNR 5, linear schedule with T = 1000, lr 2e-3
    with warm-up and cosine decay, clipping at 1) with one of chapter 14's budgets, in float32."""
    return TrainConfig(steps=steps, batch_size=batch_size, lr=2e-3, warmup=min(100, steps // 10),
                       lr_decay="cosine", grad_clip=1.0, ema_decay=ema_decay, kind="v", min_snr_gamma=5.0,
                       schedule="linear", T=1000, seed=cfg.seed, precision="fp32")


def mnist_train_config(cfg: Settings) -> TrainConfig:
    """The MNIST comparison's recipe: the same for both noise laws."""
    size = sizes(cfg)
    return recipe_with_budget(cfg, cfg.mnist_train_steps, size.mnist_batch_size, size.mnist_ema_decay)


def make_mnist_unet(width: int):
    """Chapter 05's U-Net (``mnist_ddpm.make_unet``: 2x2 patches, levels at 14 and 7,
    attention at 7x7) at base width ``width``."""
    return make_unet(chapter_settings("05", "ci", base_width=width, runner_overrides=False), patch=2)


def train_noise_mnist(cfg: Settings, noise: str, progress: bool = True):
    """(EMA model, info) trained with ``noise`` ("gaussian" or "mixture", the latter with
    ``cfg.mix_p``, ``cfg.mix_phi``) on the first ``sizes(cfg).mnist_n_train`` training digits."""
    tcfg, size = mnist_train_config(cfg), sizes(cfg)
    model, info = load_or_train(
        f"ch14-mnist-{noise}", lambda: make_mnist_unet(size.mnist_width), tcfg,
        lambda: training_images(size.mnist_n_train), data_spec(size.mnist_n_train),
        device=cfg.device, progress=progress, noise=noise_fn(noise, cfg.mix_p, cfg.mix_phi),
        noise_spec=noise_spec(noise, cfg.mix_p, cfg.mix_phi))
    return model, {**info, "train_config": tcfg}


def sample_noise_digits(model, tcfg: TrainConfig, n: int, steps: int, noise: str, p: float,
                        phi: float, generator: torch.Generator, device="cpu",
                        batch_size: int = 250) -> torch.Tensor:
    """``n`` digits with the respaced ancestral sampler (eta = 1), x_T and every z from
    ``noise``: "gaussian" is the standard sampler; "mixture" is the paper's choice (our
    reading) of keeping DDPM's update and drawing its noise from the mixture."""
    return sample_digits(model, tcfg, n, steps, 1.0, generator, device, batch_size, noise=noise_fn(noise, p, phi))


# ---------------------------------------------------------------------------------------
# ARDM
# ---------------------------------------------------------------------------------------
def make_ardm(width: int) -> ARDMNet:
    return ARDMNet(base=width, mults=(1, 2, 2), attention_levels=())


def ardm_recipe(cfg: Settings) -> dict:
    size = sizes(cfg)
    return {"binarisation": cfg.binarisation, "n_train": size.ardm_n_train, "steps": cfg.ardm_train_steps,
            "batch_size": size.ardm_batch_size, "lr": size.ardm_lr, "seed": cfg.seed}


@dataclass
class ARDMRun:
    """A trained model, its loss per step in bits per dimension, and the wall time."""

    model: nn.Module
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def train_ardm(model: nn.Module, images: torch.Tensor, steps: int, batch_size: int = 64,
               lr: float = 1e-3, seed: int = 0, grad_clip: float = 1.0,
               max_seconds: float | None = None, progress: bool = True,
               device: torch.device | str = "cpu") -> ARDMRun:
    """Adam(W) on ``ardm_loss`` over binarised ``images`` [N, 1, H, W], batches and (t, sigma)
    drawn from a generator seeded with ``seed``. The optimised number is the loss divided by
    D ln 2, i.e. bits per dimension (the same optimum, readable numbers); ``max_seconds``
    caps the wall time."""
    from tqdm.auto import tqdm

    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be positive")
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    images = images.to(device)
    d = images[0].numel()
    run = ARDMRun(model)
    start = time.perf_counter()
    for _ in tqdm(range(steps), desc="training ARDM", disable=not progress):
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=g).to(device)
        loss = bits_per_dim(ardm_loss(model, images[idx], g)[0], d)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        run.losses.append(loss.item())
    run.seconds = time.perf_counter() - start
    model.eval()
    return run


def load_or_train_ardm(cfg: Settings, progress: bool = True):
    """(ARDM in eval mode, info with losses and training seconds), from the cache or trained
    now (``train_ardm``) and cached; the key covers the architecture and the recipe."""
    model, recipe = seeded(lambda: make_ardm(sizes(cfg).ardm_width), cfg.seed), ardm_recipe(cfg)
    path = cache_dir() / f"ch14-ardm-{cache_key(model.config, recipe)}.pt"

    def compute():
        images, _ = load_binary_mnist("train", recipe["n_train"], cfg.binarisation, seed=cfg.seed)
        run = train_ardm(model, images, cfg.ardm_train_steps, recipe["batch_size"], recipe["lr"],
                         seed=cfg.seed, progress=progress, device=cfg.device)
        return {"losses": run.losses, "seconds": run.seconds}, weights_and_record(model, run.losses, run.seconds)

    info, entry = cached(path, lambda blob: load_weights_and_record(model, blob), compute)
    return model.to(cfg.device).eval(), {**info, "path": entry["path"], "trained_now": entry["trained_now"],
                                         "recipe": recipe}


def weights_and_record(model: torch.nn.Module, losses: list[float], seconds: float) -> dict:
    """What chapter 14's small models keep in the cache: CPU weights, losses, training seconds."""
    return {"weights": {k: v.cpu() for k, v in model.state_dict().items()},
            "losses": torch.tensor(losses), "seconds": torch.tensor(seconds)}


def load_weights_and_record(model: torch.nn.Module, blob: dict) -> dict:
    """``weights_and_record``'s inverse: the weights into ``model``; the losses and seconds."""
    model.load_state_dict(blob["weights"])
    return {"losses": blob["losses"].tolist(), "seconds": float(blob["seconds"])}


# ---------------------------------------------------------------------------------------
# The colour DDPM
# ---------------------------------------------------------------------------------------
def make_colour_unet(width: int) -> UNet:
    """Chapter 05's U-Net widened for colour: 3 channels in and out, 32x32 folded into 2x2
    patches (16x16), levels at 16, 8 and 4 with attention at 4x4 (16 tokens)."""
    return UNet(in_channels=3, base=width, mults=(1, 2, 2), blocks_per_level=1, patch=2,
                attention_levels=(2,))


def colour_train_config(cfg: Settings) -> TrainConfig:
    """The colour DDPM's recipe."""
    size = sizes(cfg)
    return recipe_with_budget(cfg, cfg.colour_train_steps, size.colour_batch_size, size.colour_ema_decay)


def train_colour_model(cfg: Settings, progress: bool = True):
    """(EMA model, info) of the colour DDPM on the first ``sizes(cfg).colour_n_train`` images
    of the profile's colour data (``cfg.colour_data``)."""
    tcfg, size = colour_train_config(cfg), sizes(cfg)
    model, info = load_or_train(
        f"ch14-colour-{cfg.colour_data}", lambda: make_colour_unet(size.colour_width), tcfg,
        lambda: colour_data(cfg.colour_data, "train", size.colour_n_train),
        {"data": cfg.colour_data, "train_images": f"train[0:{size.colour_n_train}]"},
        device=cfg.device, progress=progress)
    return model, {**info, "train_config": tcfg}


def sample_colour(model, tcfg: TrainConfig, n: int, steps: int, generator: torch.Generator,
                  device="cpu", batch_size: int = 250) -> tuple[torch.Tensor, float]:
    """(``n`` images [n, 3, 32, 32], seconds) with the respaced ancestral sampler."""
    schedule, out = tcfg.noise_schedule(), []
    start = time.perf_counter()
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        out.append(sample(model, (b, 3, 32, 32), schedule, steps=steps, eta=1.0, kind=tcfg.kind,
                          generator=generator, device=device).x0.float())
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return torch.cat(out), time.perf_counter() - start


# ---------------------------------------------------------------------------------------
# The 2-D toy at equal budget
# ---------------------------------------------------------------------------------------
def toy_train_config(cfg: Settings) -> TrainConfig:
    """Chapter 03's toy recipe (eps-prediction, cosine schedule), the same for both noises."""
    steps = cfg.toy_train_steps
    return TrainConfig(steps=steps, batch_size=256, lr=1e-2, warmup=min(100, steps // 10),
                       ema_decay=0.995, kind="eps", schedule="cosine", T=sizes(cfg).toy_T, seed=cfg.seed)


def train_toy(model: torch.nn.Module, points: torch.Tensor, cfg: TrainConfig, noise: str = "mixture",
              p: float = 0.5, phi: float = 0.5, progress: bool = False,
              device: torch.device | str = "cpu") -> TrainState:
    """``training.loop.train`` on ``points`` [N, d] with the training noise drawn from
    ``noise``: train one model with Gaussian and one with mixture noise under the same ``cfg``
    and the budgets are equal by construction (no checkpoint: the 2-D toy trains in seconds)."""
    state = train(model, points, cfg, progress=progress, device=device, noise=noise_fn(noise, p, phi))
    model.eval()
    return state


def train_toy_model(cfg: Settings, noise: str, points: torch.Tensor, progress: bool = True):
    """(EMA MLP denoiser, info with losses and seconds) trained by ``train_toy`` with ``noise``
    on ``points``, cached (key: architecture, recipe, noise law, data)."""
    tcfg = toy_train_config(cfg)
    model = seeded(lambda: MLPDenoiser(hidden=128, depth=3, T=tcfg.T), tcfg.seed)
    spec = noise_spec(noise, cfg.mix_p, cfg.mix_phi)
    data = {"data": "ring of 8 Gaussians", "n": len(points), "sum": round(float(points.double().sum()), 6)}
    path = cache_dir() / f"ch14-toy-{noise}-{cache_key(model.config, tcfg.__dict__, spec, data)}.pt"

    def compute():
        start = time.perf_counter()
        state = train_toy(model, points, tcfg, noise, cfg.mix_p, cfg.mix_phi, progress=progress,
                          device=cfg.device)
        seconds = time.perf_counter() - start
        model.load_state_dict(state.ema.state_dict())     # the EMA weights are the model
        return {"losses": state.losses, "seconds": seconds}, weights_and_record(model, state.losses, seconds)

    info, entry = cached(path, lambda blob: load_weights_and_record(model, blob), compute)
    return model.to(cfg.device).eval(), {**info, "trained_now": entry["trained_now"], "train_config": tcfg}
