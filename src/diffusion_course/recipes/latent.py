"""Latent diffusion (chapter 10): compress MNIST with a small autoencoder, run the diffusion
model on its latent grid, decode the generated latents in one pass.

    image x [1, 28, 28] --encoder--> z = mu(x) [4, 7, 7] --scale--> z_s = (z - shift) * scale
    sample z_s with sampling.sample (U-Net at 7x7) --unscale--> z = z_s / scale + shift
    --decoder (once)--> x_hat [1, 28, 28]

The autoencoder is chapter 04's ``Autoencoder`` architecture, optionally made a VAE
(``variational=True``): the encoder then outputs a mean and a log-variance per latent
number, training decodes a draw z = mu + sigma * eps, and the loss adds a small multiple of

    KL(N(mu, sigma^2) || N(0, 1)) = 1/2 (mu^2 + sigma^2 - 1 - log sigma^2)     (per number)

(Kingma & Welling 2014; Stable Diffusion's autoencoder uses a weight of about 1e-6 on the
summed KL). Either way the latents the diffusion model sees are standardised with one shift
and one scale measured on the training latents, so that they have mean 0 and variance 1
(Stable Diffusion's 0.18215 is such a scale, without the shift): the noise schedule of
chapter 05, built for data of about unit size, then applies unchanged.
"""
from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..course.settings import Settings, train_config_from
from ..data.mnist import data_spec, training_images
from ..data.paths import cache_dir
from ..diffusion.gaussians import kl_to_standard_normal
from ..diffusion.objectives import diffusion_loss
from ..diffusion.sampling import sample
from ..diffusion.schedules import NoiseSchedule
from ..models.autoencoder import LatentAutoencoder, LatentCodec
from ..models.unet import UNet
from ..training.cache import cache_key, cached, load_or_train, seeded
from ..training.device import autocast
from ..training.loop import TrainConfig, lr_at

# ---------------------------------------------------------------------------------------
# The autoencoder: plain or KL-regularised
# ---------------------------------------------------------------------------------------


def autoencoder_loss(model: LatentAutoencoder, x: torch.Tensor, kl_weight: float,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, float, float]:
    """(loss, reconstruction MSE, KL per latent number) for a batch.

    loss = mean_pixels (decode(z) - x)^2 + kl_weight * mean_latents KL(q(z|x) || N(0, 1)),
    with z = mu + sigma * eps (reparameterisation, eps from ``generator``) for a VAE, z = the
    code for a plain autoencoder (whose KL is reported as 0).
    """
    mu, logvar = model.posterior(x)
    if logvar is None:
        z, kl = mu, torch.zeros((), device=x.device)
    else:
        eps = torch.randn(mu.shape, generator=generator).to(mu.device)
        z = mu + (0.5 * logvar).exp() * eps            # z = mu + sigma * eps
        kl = kl_to_standard_normal(mu, logvar).mean()
    mse = F.mse_loss(model.decode(z), x)
    return mse + kl_weight * kl, mse.item(), kl.item()


def train_latent_autoencoder(model: LatentAutoencoder, images: torch.Tensor, steps: int,
                             batch_size: int = 64, lr: float = 2e-3, kl_weight: float = 1e-3,
                             seed: int = 0, progress: bool = False,
                             device: torch.device | str = "cpu") -> dict:
    """Adam with warm-up and cosine decay (``training.loop.lr_at``); batches drawn with replacement
    from a generator seeded with ``seed``. Returns {"mse": [...], "kl": [...], "seconds": s}."""
    if kl_weight < 0:
        raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")
    schedule_cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup=min(100, steps // 10))
    g = torch.Generator().manual_seed(seed)
    model.to(device).train()
    images = images.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = {"mse": [], "kl": []}
    start = time.perf_counter()
    for step in tqdm(range(steps), desc="autoencoder", disable=not progress, mininterval=1):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, schedule_cfg)
        idx = torch.randint(0, len(images), (batch_size,), generator=g).to(device)
        loss, mse, kl = autoencoder_loss(model, images[idx], kl_weight, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history["mse"].append(mse)
        history["kl"].append(kl)
    history["seconds"] = time.perf_counter() - start
    model.eval()
    return history


# ---------------------------------------------------------------------------------------
# Latent scaling and the codec
# ---------------------------------------------------------------------------------------
def fit_scaling(latents: torch.Tensor) -> tuple[float, float]:
    """(shift, scale) with (latents - shift) * scale of mean 0 and variance 1 over all numbers:
    shift = mean(z), scale = 1 / std(z) (population std, one scalar for every channel)."""
    z = latents.detach().double().flatten()
    shift = z.mean()
    std = (z - shift).pow(2).mean().sqrt()
    if not std > 0:
        raise ValueError("the latents are constant: no scale makes them unit-variance")
    return shift.item(), (1.0 / std).item()


def reconstruction_report(codec: LatentCodec, x: torch.Tensor) -> dict:
    """MSE and PSNR (peak-to-peak 2 for images in [-1, 1]: PSNR = 10 log10(4 / MSE)) of the
    reconstructions of ``x``, averaged over images (PSNR per image, then mean)."""
    rec = codec.reconstruct(x)
    mse = (rec - x).pow(2).flatten(1).mean(1)
    return {"mse": mse.mean().item(), "psnr_db": (10 * torch.log10(4.0 / mse.clamp(min=1e-12))).mean().item()}


# ---------------------------------------------------------------------------------------
# Training and caching, from the chapter-10 settings
# ---------------------------------------------------------------------------------------
def make_autoencoder(cfg: Settings) -> LatentAutoencoder:
    return LatentAutoencoder(channels=(cfg.ae_width, 2 * cfg.ae_width), latent_channels=cfg.latent_channels,
                             variational=cfg.kl_weight > 0)


def autoencoder_recipe(cfg: Settings) -> dict:
    return {"steps": cfg.ae_steps, "batch_size": cfg.ae_batch_size, "lr": cfg.ae_lr,
            "kl_weight": cfg.kl_weight, "seed": cfg.seed}


def load_or_train_codec(cfg: Settings, progress: bool = True) -> tuple[LatentCodec, dict]:
    """The chapter-10 codec for these settings, from ``<cache>/mnist-codec-<hash>.pt`` or
    trained now (on the chapter's training images, the weights initialised under ``cfg.seed``)
    and cached. ``info`` has the loss history, the training time, the shift/scale and whether
    it was trained now."""
    model = seeded(lambda: make_autoencoder(cfg), cfg.seed)
    spec = data_spec(cfg.n_train)
    recipe = autoencoder_recipe(cfg)
    key = cache_key(model.config, recipe, spec)
    path = cache_dir() / f"mnist-codec-{key}.pt"

    def load(blob):
        model.load_state_dict(blob["model"])
        return blob["shift"], blob["scale"], {"seconds": blob["seconds"], "mse": blob["mse"].tolist(),
                                              "kl": blob["kl"].tolist()}

    def compute():
        images, _ = training_images(cfg.n_train)
        hist = train_latent_autoencoder(model, images, cfg.ae_steps, cfg.ae_batch_size, cfg.ae_lr,
                                        cfg.kl_weight, cfg.seed, progress, cfg.device)
        model.cpu().eval()
        with torch.no_grad():
            shift, scale = fit_scaling(torch.cat([model.encode(c) for c in images.split(1000)]))
        blob = {"model": model.state_dict(), "shift": shift, "scale": scale, "seconds": hist["seconds"],
                "mse": torch.tensor(hist["mse"]), "kl": torch.tensor(hist["kl"]), "config": model.config,
                "recipe": recipe, "data": spec}
        return (shift, scale, {k: hist[k] for k in ("seconds", "mse", "kl")}), blob

    (shift, scale, record), entry = cached(path, load, compute)
    info = {"path": entry["path"], "trained_now": entry["trained_now"], "key": key, **record, "data": spec}
    return LatentCodec(model.cpu(), shift, scale).to(cfg.device), info


def make_latent_unet(cfg: Settings) -> UNet:
    """The latent U-Net: one level at 7x7 (the latent grid itself), no down-sampling (7 is
    odd: a 2x2 down-sample would need padding to 8x8). Self-attention over the 49 positions
    only in the middle block: attention in the level's blocks as well made each network call
    1.3x slower (measured, 2-core CPU) and cost the 4x sampling speed-up over pixels."""
    return UNet(in_channels=cfg.latent_channels, base=cfg.base_width, mults=(1,),
                blocks_per_level=cfg.blocks_per_level, attention_levels=(), patch=1)


def latent_train_config(cfg: Settings) -> TrainConfig:
    """Chapter 05's recipe (v-prediction, min-SNR, linear schedule, T = 1000) on latents."""
    return train_config_from(cfg, kind="v", min_snr_gamma=5.0, schedule="linear", T=1000)


def load_or_train_latent_ddpm(cfg: Settings, codec: LatentCodec, codec_key: str,
                              progress: bool = True, max_seconds: float | None = None):
    """(EMA latent U-Net, info), trained with ``training.cache.load_or_train`` on the scaled
    latents of the training images. ``codec_key`` (from ``load_or_train_codec``) enters
    the cache key: another autoencoder means other latents, hence another model."""
    spec = {**data_spec(cfg.n_train), "latents_of": f"mnist-codec-{codec_key}"}

    def data():
        images, labels = training_images(cfg.n_train)
        return codec.encode(images.to(cfg.device)).cpu(), labels

    return load_or_train("mnist-ldm", lambda: make_latent_unet(cfg), latent_train_config(cfg), data, spec,
                         device=cfg.device, progress=progress, max_seconds=max_seconds)


class LatentDiffusion:
    """A latent U-Net, its codec and its schedule: ``sample`` runs ``diffusion.sampling.sample`` on the
    latent grid (no clipping: scaled latents are not confined to [-1, 1]) and decodes once."""

    def __init__(self, unet: nn.Module, codec: LatentCodec, schedule: NoiseSchedule,
                 kind: str = "v", precision: str = "fp32"):
        self.unet, self.codec, self.schedule = unet.eval(), codec, schedule
        self.kind, self.precision = kind, precision

    def sample_latents(self, n: int, steps: int, eta: float = 1.0, generator: torch.Generator | None = None,
                       x_T: torch.Tensor | None = None, device: torch.device | str = "cpu",
                       progress: bool = False, precision: str | None = None) -> torch.Tensor:
        with autocast(precision or self.precision, device):
            traj = sample(self.unet, (n, *self.codec.latent_shape), self.schedule, steps=steps, eta=eta,
                          kind=self.kind, clip_x0=False, generator=generator, x_T=x_T, device=device,
                          progress=progress)
        return traj.x0.float()

    def sample(self, n: int, steps: int, eta: float = 1.0, generator: torch.Generator | None = None,
               x_T: torch.Tensor | None = None, device: torch.device | str = "cpu",
               progress: bool = False, precision: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(images in [-1, 1], scaled latents) of ``n`` samples (``precision``: this call's,
        default the model's)."""
        z = self.sample_latents(n, steps, eta, generator, x_T, device, progress, precision)
        return self.codec.decode(z.to(device)).cpu(), z


def generators(pixel_model: nn.Module, pixel_config: TrainConfig, ldm: LatentDiffusion, steps: int,
               eta: float, device: torch.device | str = "cpu", progress: bool = False) -> dict[str, Callable]:
    """Chapter 10's two generators with the same sampler and step count, as
    ``{"pixel": f, "latent": f}`` with ``f(n, generator, precision="fp32")`` -> ``n`` images
    [n, 1, 28, 28] in float32 (the latent one decoded in one pass): what the chapter and
    ``benchmarks/latent.py`` time and score."""
    def pixel(n: int, generator: torch.Generator | None, precision: str = "fp32") -> torch.Tensor:
        with autocast(precision, device):
            return sample(pixel_model, (n, 1, 28, 28), pixel_config.noise_schedule(), steps=steps, eta=eta,
                          kind=pixel_config.kind, generator=generator, device=device, progress=progress).x0.float()

    def latent(n: int, generator: torch.Generator | None, precision: str = "fp32") -> torch.Tensor:
        return ldm.sample(n, steps, eta=eta, generator=generator, device=device, progress=progress,
                          precision=precision)[0]

    return {"pixel": pixel, "latent": latent}


def generate_in_batches(generate: Callable, n: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` images from ``generate(b, generator)`` in batches of at most ``batch``."""
    return torch.cat([generate(min(batch, n - i), generator) for i in range(0, n, batch)])


# ---------------------------------------------------------------------------------------
# Cost measurements shared by chapter 10 and benchmarks/latent.py
# ---------------------------------------------------------------------------------------
def seconds_per_train_step(models: dict[str, nn.Module], data: dict[str, torch.Tensor],
                           configs: dict[str, TrainConfig], steps: int = 4, seed: int = 0,
                           device: torch.device | str = "cpu") -> dict[str, float]:
    """Fastest of ``steps`` timed training steps (the shared loop's loss, backward, clip,
    AdamW step) of a throw-away copy of each model, the models taking turns so that a busy
    machine slows them alike. The minimum is the least disturbed measurement."""
    import copy

    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, model in models.items():
        m = copy.deepcopy(model).to(device).train().requires_grad_(True)
        state[name] = (m, torch.optim.AdamW(m.parameters(), lr=1e-4), configs[name].noise_schedule())
    best = {name: float("inf") for name in models}
    for i in range(steps + 1):  # the first round warms up and is not counted
        for name, (m, opt, schedule) in state.items():
            cfg, x = configs[name], data[name]
            idx = torch.randint(0, len(x), (cfg.batch_size,), generator=g)
            start = time.perf_counter()
            with autocast(cfg.precision, device):
                loss = diffusion_loss(m, x[idx].to(device), schedule, cfg.kind, cfg.min_snr_gamma, None, g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), cfg.grad_clip)
            opt.step()
            if i > 0:
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def seconds_per_image(generators: dict[str, Callable[[int], object]], n: int = 50,
                      repeats: int = 2) -> dict[str, float]:
    """Fastest of ``repeats`` timed calls ``generate(n)`` per entry, divided by n, the entries
    taking turns (after one untimed warm-up call each with 2 images)."""
    for gen in generators.values():
        gen(2)
    best = {name: float("inf") for name in generators}
    for _ in range(repeats):
        for name, gen in generators.items():
            start = time.perf_counter()
            gen(n)
            best[name] = min(best[name], (time.perf_counter() - start) / n)
    return best
