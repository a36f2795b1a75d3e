"""Order-agnostic autoregressive diffusion (ARDM; Hoogeboom et al. 2022, "Autoregressive
Diffusion Models", ICLR, arXiv:2110.02037) on binarised MNIST.

An ARDM generates the D = 28 x 28 = 784 pixels one at a time in a random order sigma. So its
number of steps T is the number of pixels (T = D), not a number of noise levels; "absorbing"
a pixel (forgetting it) is its forward process. For one order the likelihood is an ordinary
autoregressive product,

    log p(x | sigma) = sum_{t=1..D} log p(x_sigma(t) | x_sigma(<t)),

and the model's likelihood is the average over orders, log p(x) >= E_sigma log p(x | sigma)
(Jensen), the bound that training maximises. One network call predicts *every* unknown
pixel at once, so a training step can score all D - t + 1 of them:

    L = D E_{t ~ U{1..D}} E_sigma [ 1 / (D - t + 1) sum_{k in sigma(>=t)} -log p(x_k | x_sigma(<t)) ]

is an unbiased estimate of -E_sigma log p(x | sigma) (each unknown pixel stands in for
"the next one", which is any of them with probability 1 / (D - t + 1)). ``ardm_loss`` draws
t and sigma per example; ``exact_nll`` computes -log p(x | sigma) for one order by D
sequential calls, or as batches of masked copies (``batch``); ``bits_per_dim`` = nats / (D ln 2).

The network sees the known pixels (unknown ones set to 0, known ones as +-1) and the mask of
which pixels are known, nothing else; ``ARDMNet`` also embeds the number of known pixels
(a function of the mask) the way the U-Net embeds time. Sampling fills ``group`` pixels per
call (``sample``): group = 1 is exact ancestral sampling with D calls; group = k draws k
pixels independently given the same known set, D / k calls, faster and slightly wrong.

Binarisation (``binarise``): a pixel is 1 where its MNIST intensity in [0, 1] exceeds 0.5
(byte value >= 128), deterministic, the default here; or "bernoulli": 1 with probability
equal to its intensity (dynamic binarisation, seeded). Bits per dimension depend on this
choice: thresholded digits are far more predictable than Bernoulli-binarised ones, so
numbers here are not comparable with papers that use the other one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


# ---------------------------------------------------------------------------------------
# Orders, masks and the loss
# ---------------------------------------------------------------------------------------
def random_orders(n: int, d: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n independent uniformly random permutations sigma of 0..d-1, [n, d] int64:
    row i lists the pixels (flattened) in the order example i generates them."""
    return torch.rand(n, d, generator=generator).argsort(dim=1)


def known_mask(order: torch.Tensor, t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The pixels sigma(<t) = the first t - 1 of each order, as a bool mask [n, *shape]."""
    n, d = order.shape
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(d).expand(n, d))  # rank[k] = position of k
    return (rank < (t.reshape(-1, 1) - 1)).reshape(n, *shape)


def pixel_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x_k) of every pixel under Bernoulli(sigmoid(logit_k)), in nats."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none")


def weighted_unknown_nll(model, x: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Per example: D / (D - t + 1) * sum_{k unknown} -log p(x_k | x_known), where t - 1 is the
    number of known pixels: one term of the ARDM loss (the D in front makes its mean over t
    an estimate of -log p(x | sigma) in nats per image)."""
    d = x[0].numel()
    known = known.bool()
    logits = model(x * known, known)
    nll = (pixel_nll(logits, x) * (~known)).flatten(1).sum(1)
    n_unknown = (d - known.flatten(1).sum(1)).to(nll.dtype)     # = D - t + 1
    return d / n_unknown * nll


def ardm_loss(model, x: torch.Tensor, generator: torch.Generator | None = None,
              t: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, per-example) of the ARDM loss, in nats per image: per example a random order
    sigma and t ~ U{1..D} (or the given ``t``), then ``weighted_unknown_nll``."""
    n, d = x.shape[0], x[0].numel()
    if t is None:
        t = torch.randint(1, d + 1, (n,), generator=generator)
    order = random_orders(n, d, generator)
    per_example = weighted_unknown_nll(model, x, known_mask(order, t, x.shape[1:]).to(x.device))
    return per_example.mean(), per_example


def bits_per_dim(nll_nats: torch.Tensor | float, d: int = 784) -> torch.Tensor | float:
    """Negative log-likelihood per image in nats -> bits per pixel: nll / (D ln 2)."""
    return nll_nats / (d * math.log(2))


@torch.no_grad()
def exact_nll(model, x: torch.Tensor, order: torch.Tensor | None = None,
              generator: torch.Generator | None = None, batch: int | None = None) -> torch.Tensor:
    """-log p(x | sigma) = -sum_t log p(x_sigma(t) | x_sigma(<t)) in nats, per image.

    ``batch=None``: D sequential calls, each one revealing the next pixel of the order.
    ``batch=k``: the same numbers from D masked copies of each image, k copies per call
    (copy t knows the order's first t pixels): for a fixed order no call depends on another's
    output, every context is part of the data, so the calls can run as one batch. (Sampling
    cannot: there each call's input holds the pixels the previous calls drew.)

    ``order``: [D] (one order for every image) or [B, D]; default a random order per image.
    This is the likelihood of one order; the model's is the average over orders, of which
    the training loss estimates the bound."""
    b, d = x.shape[0], x[0].numel()
    order = random_orders(b, d, generator) if order is None else order.reshape(-1, d).expand(b, d)
    order = order.to(x.device)
    flat_x = x.reshape(b, d)
    if batch is not None:
        return _exact_nll_batched(model, x, order, batch)
    known = torch.zeros(b, d, dtype=torch.bool, device=x.device)
    total = torch.zeros(b, dtype=torch.float64, device=x.device)
    for i in range(d):
        logits = model(x * known.view_as(x), known.view_as(x)).reshape(b, d)
        k = order[:, i:i + 1]
        total += pixel_nll(logits.gather(1, k), flat_x.gather(1, k)).squeeze(1).double()
        known.scatter_(1, k, True)
    return total


def _exact_nll_batched(model, x: torch.Tensor, order: torch.Tensor, batch: int) -> torch.Tensor:
    """``exact_nll`` with the D contexts of each image as masked copies, ``batch`` per call."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    b, d = x.shape[0], x[0].numel()
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(d, device=x.device).expand(b, d))   # rank[i, pixel] = its place in the order
    total = torch.zeros(b, dtype=torch.float64, device=x.device)
    for i in range(b):
        flat = x[i].reshape(d)
        for steps in torch.arange(d, device=x.device).split(batch):
            known = (rank[i][None, :] < steps[:, None]).reshape(len(steps), *x.shape[1:])   # copy t: the first t pixels
            logits = model(x[i:i + 1] * known, known).reshape(len(steps), d)
            pixels = order[i, steps]
            total[i] += pixel_nll(logits[torch.arange(len(steps), device=x.device), pixels], flat[pixels]).double().sum()
    return total


@torch.no_grad()
def elbo_nll(model, x: torch.Tensor, draws: int = 16,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """The training loss averaged over ``draws`` random (t, sigma) per image: a Monte Carlo
    estimate of -E_sigma log p(x | sigma), in nats per image, at ``draws`` calls."""
    return torch.stack([ardm_loss(model, x, generator)[1] for _ in range(draws)]).mean(0)


# ---------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------
@dataclass
class ARDMSamples:
    """What ``sample`` returns: images {0, 1} [n, *shape], the number of network calls, and
    for every pixel the call (0-based) that filled it [n, *shape]."""

    images: torch.Tensor
    calls: int
    filled_at: torch.Tensor


@torch.no_grad()
def sample(model, n: int, shape: tuple[int, ...] = (1, 28, 28), group: int = 1,
           generator: torch.Generator | None = None, order: torch.Tensor | None = None,
           device: torch.device | str = "cpu") -> ARDMSamples:
    """Generate n images, ``group`` pixels per network call in a random order per image
    (or the given ``order``, [D] or [n, D]): ceil(D / group) calls. Each call samples its
    group's pixels independently from Bernoulli(sigmoid(logit)) given the pixels known so far;
    group = 1 is exact ancestral sampling of the model. Deterministic under ``generator``."""
    d = math.prod(shape)
    if isinstance(group, bool) or not isinstance(group, int) or not 1 <= group <= d:
        raise ValueError(f"group (pixels per network call) must be an int in 1..{d}, got {group!r}")
    order = random_orders(n, d, generator) if order is None else order.reshape(-1, d).expand(n, d)
    x = torch.zeros(n, d, device=device)
    known = torch.zeros(n, d, dtype=torch.bool, device=device)
    filled_at = torch.full((n, d), -1, dtype=torch.long)
    calls = 0
    for start in range(0, d, group):
        idx = order[:, start:start + group].to(device)
        logits = model(x.view(n, *shape) * known.view(n, *shape), known.view(n, *shape)).reshape(n, d)
        probs = torch.sigmoid(logits.gather(1, idx)).cpu()
        draws = (torch.rand(probs.shape, generator=generator) < probs).float().to(device)
        x.scatter_(1, idx, draws)
        known.scatter_(1, idx, True)
        filled_at.scatter_(1, idx.cpu(), calls)
        calls += 1
    return ARDMSamples(x.view(n, *shape).cpu(), calls, filled_at.view(n, *shape))
