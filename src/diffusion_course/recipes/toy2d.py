"""The 2-D toy models the chapters train in seconds: chapter 03's GAN on the ring of Gaussians
(``train_toy_gan``) and chapter 08's score network (``train_score_mlp``)."""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from ..diffusion.score import dsm_loss
from ..models.gan import Discriminator, Generator
from ..models.toy2d import ScoreMLP
from ..training.gan import GANRun, train_gan


def train_toy_gan(data: torch.Tensor, steps: int = 2000, batch_size: int = 256, lr: float = 1e-3,
                  latent_dim: int = 2, hidden: int = 128, depth: int = 3, seed: int = 0,
                  snapshot_every: int | None = None, n_snapshot: int = 1000,
                  progress: bool = False, device: torch.device | str = "cpu") -> GANRun:
    """The course's GAN (``training.gan.train_gan``: non-saturating loss, Adam with betas (0.5, 0.999))
    with this module's MLP generator and discriminator, for points of ``data`` [N, dim].
    Deterministic under ``seed`` on the CPU (the weights are initialised from it too)."""
    torch.manual_seed(seed)  # the weight initialisation
    G = Generator(latent_dim, hidden, depth, data.shape[1])
    D = Discriminator(hidden, depth, data.shape[1])
    return train_gan(G, D, data, steps, batch_size=batch_size, lr=lr, seed=seed,
                     snapshot_every=snapshot_every, n_snapshot=n_snapshot, progress=progress, device=device)


def train_score_mlp(data: torch.Tensor, sigma_min: float, sigma_max: float, steps: int = 2000,
                    batch_size: int = 256, lr: float = 5e-3, hidden: int = 128, depth: int = 3,
                    seed: int = 0, progress: bool = False) -> tuple[ScoreMLP, list[float]]:
    """Fit a ScoreMLP to points ``data`` [N, d] with ``dsm_loss``, sigma log-uniform in
    [sigma_min, sigma_max], Adam with a cosine-decayed learning rate. Deterministic under
    ``seed`` (CPU). Returns (model in eval mode, per-step losses)."""
    if not sigma_max > sigma_min > 0:
        raise ValueError(f"need sigma_max > sigma_min > 0, got {sigma_min}, {sigma_max}")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = ScoreMLP(hidden, depth, data.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    lo, hi = math.log(sigma_min), math.log(sigma_max)
    losses = []
    for _ in tqdm(range(steps), desc="DSM", disable=not progress, mininterval=2):
        x0 = data[torch.randint(0, data.shape[0], (batch_size,), generator=g)].float()
        sigma = torch.exp(lo + (hi - lo) * torch.rand(batch_size, generator=g))   # log-uniform
        loss = dsm_loss(net, x0, sigma, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return net.eval(), losses
