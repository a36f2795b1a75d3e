"""Chapter 14's trained models, each cached so a second run of the chapter loads them:

* ``train_noise_mnist``: chapter 05's U-Net and recipe (v-prediction, min-SNR 5, linear
  schedule, T = 1000) trained with Gaussian or with mixture noise under the same budget
  (``training.load_or_train`` with the noise law as an argument and in the cache key);
  ``sample_noise_digits`` samples either with the respaced ancestral sampler, drawing x_T
  and every z from the chosen law;
* ``load_or_train_ardm``: the ARDM (``ardm.ARDMNet``) on binarised MNIST;
* ``train_colour_model``: the colour DDPM (``colour.make_colour_unet``) on the profile's
  colour data.
"""
from __future__ import annotations

import time

import torch

from .mixture_noise import noise_fn
from .settings import Settings
from .training import (TrainConfig, cache_dir, cache_key, cache_lock, load_or_train,
                       save_atomically, seeded)


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
    return recipe_with_budget(cfg, cfg.mnist_train_steps, cfg.mnist_batch_size, cfg.mnist_ema_decay)


def make_mnist_unet(width: int):
    """Chapter 05's U-Net (``mnist_ddpm.make_unet``: 2x2 patches, levels at 14 and 7,
    attention at 7x7) at base width ``width``."""
    from .mnist_ddpm import make_unet
    from .settings import chapter_settings

    return make_unet(chapter_settings("05", "ci", base_width=width, runner_overrides=False), patch=2)


def train_noise_mnist(cfg: Settings, noise: str, progress: bool = True):
    """(EMA model, info) trained with ``noise`` ("gaussian" or "mixture", the latter with
    ``cfg.mix_p``, ``cfg.mix_phi``) on the first ``cfg.mnist_n_train`` training digits."""
    from .mnist_ddpm import data_spec, training_images

    tcfg = mnist_train_config(cfg)
    model, info = load_or_train(
        f"ch14-mnist-{noise}", lambda: make_mnist_unet(cfg.mnist_width), tcfg,
        lambda: training_images(cfg.mnist_n_train), data_spec(cfg.mnist_n_train),
        device=cfg.device, progress=progress, noise=noise_fn(noise, cfg.mix_p, cfg.mix_phi),
        noise_spec=noise_spec(noise, cfg.mix_p, cfg.mix_phi))
    return model, {**info, "train_config": tcfg}


def sample_noise_digits(model, tcfg: TrainConfig, n: int, steps: int, noise: str, p: float,
                        phi: float, generator: torch.Generator, device="cpu",
                        batch_size: int = 250) -> torch.Tensor:
    """``n`` digits with the respaced ancestral sampler (eta = 1), x_T and every z from
    ``noise``: "gaussian" is the standard sampler; "mixture" is the paper's choice (our
    reading) of keeping DDPM's update and drawing its noise from the mixture."""
    from .mnist_ddpm import sample_digits

    return sample_digits(model, tcfg, n, steps, 1.0, generator, device, batch_size, noise=noise_fn(noise, p, phi))


# ---------------------------------------------------------------------------------------
# ARDM
# ---------------------------------------------------------------------------------------
def make_ardm(width: int):
    from .ardm import ARDMNet

    return ARDMNet(base=width, mults=(1, 2, 2), attention_levels=())


def ardm_recipe(cfg: Settings) -> dict:
    return {"binarisation": cfg.binarisation, "n_train": cfg.ardm_n_train, "steps": cfg.ardm_train_steps,
            "batch_size": cfg.ardm_batch_size, "lr": cfg.ardm_lr, "seed": cfg.seed}


def load_or_train_ardm(cfg: Settings, progress: bool = True):
    """(ARDM in eval mode, info with losses and training seconds), from the cache or trained
    now (``ardm.train_ardm``) and cached; the key covers the architecture and the recipe."""
    from .ardm import load_binary_mnist, train_ardm

    model, recipe = seeded(lambda: make_ardm(cfg.ardm_width), cfg.seed), ardm_recipe(cfg)
    path = cache_dir() / f"ch14-ardm-{cache_key(model.config, recipe)}.pt"
    with cache_lock(path):
        if path.exists():
            blob = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(blob["weights"])
            info = {"trained_now": False, "losses": blob["losses"].tolist(),
                    "seconds": float(blob["seconds"]), "path": str(path)}
        else:
            images, _ = load_binary_mnist("train", cfg.ardm_n_train, cfg.binarisation, seed=cfg.seed)
            run = train_ardm(model, images, cfg.ardm_train_steps, cfg.ardm_batch_size, cfg.ardm_lr,
                             seed=cfg.seed, progress=progress, device=cfg.device)
            save_atomically({"weights": {k: v.cpu() for k, v in model.state_dict().items()},
                             "losses": torch.tensor(run.losses), "seconds": torch.tensor(run.seconds)}, path)
            info = {"trained_now": True, "losses": run.losses, "seconds": run.seconds, "path": str(path)}
    return model.to(cfg.device).eval(), {**info, "recipe": recipe}


# ---------------------------------------------------------------------------------------
# The colour DDPM
# ---------------------------------------------------------------------------------------
def colour_train_config(cfg: Settings) -> TrainConfig:
    """The colour DDPM's recipe."""
    return recipe_with_budget(cfg, cfg.colour_train_steps, cfg.colour_batch_size, cfg.colour_ema_decay)


def train_colour_model(cfg: Settings, progress: bool = True):
    """(EMA model, info) of the colour DDPM on the first ``cfg.colour_n_train`` images of the
    profile's colour data (``cfg.colour_data``)."""
    from .colour import colour_data, make_colour_unet

    tcfg = colour_train_config(cfg)
    model, info = load_or_train(
        f"ch14-colour-{cfg.colour_data}", lambda: make_colour_unet(cfg.colour_width), tcfg,
        lambda: colour_data(cfg.colour_data, "train", cfg.colour_n_train),
        {"data": cfg.colour_data, "train_images": f"train[0:{cfg.colour_n_train}]"},
        device=cfg.device, progress=progress)
    return model, {**info, "train_config": tcfg}


def sample_colour(model, tcfg: TrainConfig, n: int, steps: int, generator: torch.Generator,
                  device="cpu", batch_size: int = 250) -> tuple[torch.Tensor, float]:
    """(``n`` images [n, 3, 32, 32], seconds) with the respaced ancestral sampler."""
    from .sampling import sample

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
                       ema_decay=0.995, kind="eps", schedule="cosine", T=cfg.toy_T, seed=cfg.seed)


def train_toy_model(cfg: Settings, noise: str, points: torch.Tensor, progress: bool = True):
    """(EMA MLP denoiser, info with losses and seconds) trained by ``mixture_noise.train_toy``
    with ``noise`` on ``points``, cached (key: architecture, recipe, noise law, data)."""
    from .mixture_noise import train_toy
    from .toy2d import MLPDenoiser

    tcfg = toy_train_config(cfg)
    model = seeded(lambda: MLPDenoiser(hidden=128, depth=3, T=cfg.toy_T), tcfg.seed)
    spec = noise_spec(noise, cfg.mix_p, cfg.mix_phi)
    data = {"data": "ring of 8 Gaussians", "n": len(points), "sum": round(float(points.double().sum()), 6)}
    path = cache_dir() / f"ch14-toy-{noise}-{cache_key(model.config, tcfg.__dict__, spec, data)}.pt"
    with cache_lock(path):
        if path.exists():
            blob = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(blob["weights"])
            info = {"trained_now": False, "losses": blob["losses"].tolist(), "seconds": float(blob["seconds"])}
        else:
            start = time.perf_counter()
            state = train_toy(model, points, tcfg, noise, cfg.mix_p, cfg.mix_phi, progress=progress,
                              device=cfg.device)
            seconds = time.perf_counter() - start
            model = state.ema
            save_atomically({"weights": {k: v.cpu() for k, v in model.state_dict().items()},
                             "losses": torch.tensor(state.losses), "seconds": torch.tensor(seconds)}, path)
            info = {"trained_now": True, "losses": state.losses, "seconds": seconds}
    return model.to(cfg.device).eval(), {**info, "train_config": tcfg}
