"""Chapter 14's colour images: the data a profile uses, a colour DDPM, and a small colour
classifier as the judge, with the same protocol as MNIST's (``judge.py``).

Data (``colour_data``): CIFAR-10 (``cifar.load_cifar10``, checksummed) in the ``gpu``
profile, or the SYNTHETIC shapes of ``cifar.synthetic_colour_set`` (no download) in ``ci``
and ``cpu``. Each data set has a training split (what the diffusion model and the judge
learn from, and what floors are drawn from) and a held-out reference split (what generated
images are compared with).

The judge (``ColourJudge``): ``ColourClassifier``, three conv blocks and a 64-d feature
layer, trained by one recipe per *data set* (``JUDGE_RECIPES``), whatever the profile:
the ``ci`` and ``cpu`` profiles, which both use the synthetic set, get the very same judge.
The synthetic set's recipe adds Gaussian pixel noise (sd uniform in [0, 0.3] per image) to
the training batches: trained on clean shapes only (this recipe without the noise), the
same classifier labels held-out shapes near chance once noise of sd 0.1 is added (0.30
accuracy), so it reads a sample's speckle instead of its shape.
``ColourJudge.accuracy(noise_sd)`` checks the judge on noisy held-out images.
Generated images are scored by the Frechet distance between their features and the
reference split's (``metrics.frechet_from_features``), next to the real-vs-real floor at
the same N (``metrics.frechet_floor``: N random training images against the same reference,
the mean over 10 seeded draws). The ratio FD / floor reads like the MNIST judge's: 1 is as
close as real images get at this N.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .metrics import classify, conv_classifier_body, fit_classifier, frechet_floor, frechet_from_features
from .settings import pick_device
from .training import cache_dir, cache_key, load_or_train_weights
from .unet import UNet

COLOUR_DATA = ("synthetic", "cifar10")
# The synthetic set's splits: seeds far from the chapter's, sizes that make floors at N up to
# 5,000 possible. CIFAR-10's are its own train (50,000) and test (10,000) files.
SYNTHETIC_SPLITS = {"train": {"n": 10_000, "seed": 1_000}, "test": {"n": 5_000, "seed": 2_000}}
JUDGE_RECIPES = {"synthetic": {"steps": 300, "batch_size": 64, "lr": 3e-3, "noise": 0.3},
                 "cifar10": {"steps": 8_000, "batch_size": 128, "lr": 3e-3}}
FLOOR_DRAWS = 10


def num_classes(data: str) -> int:
    from .cifar import CLASSES, SYNTHETIC_CLASSES

    _check_data(data)
    return len(SYNTHETIC_CLASSES) if data == "synthetic" else len(CLASSES)


def _check_data(data: str) -> None:
    if data not in COLOUR_DATA:
        raise ValueError(f"unknown colour data {data!r}; allowed: {', '.join(COLOUR_DATA)}")


def colour_data(data: str, split: str = "train", n: int | None = None,
                download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [N, 3, 32, 32] in [-1, 1] and labels [N] of ``split`` ("train" or "test"),
    the first ``n``. Synthetic: ``cifar.synthetic_colour_set`` with the split's seed (the
    first n of the split, so every n is a prefix of the same images)."""
    from .cifar import load_cifar10, synthetic_colour_set

    _check_data(data)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if data == "cifar10":
        return load_cifar10(split, n, download=download)
    spec = SYNTHETIC_SPLITS[split]
    size = spec["n"] if n is None else n
    if not 1 <= size <= spec["n"]:
        raise ValueError(f"the synthetic {split} split has {spec['n']} images; asked for n = {n}")
    return synthetic_colour_set(size, seed=spec["seed"])


def make_colour_unet(width: int) -> UNet:
    """Chapter 05's U-Net widened for colour: 3 channels in and out, 32x32 folded into 2x2
    patches (16x16), levels at 16, 8 and 4 with attention at 4x4 (16 tokens)."""
    return UNet(in_channels=3, base=width, mults=(1, 2, 2), blocks_per_level=1, patch=2,
                attention_levels=(2,))


# ---------------------------------------------------------------------------------------
# The judge
# ---------------------------------------------------------------------------------------
class ColourClassifier(nn.Module):
    """The MNIST judge's body (``metrics.conv_classifier_body``) for 3 channels: 32x32 -> 16
    -> 8 -> pooled, and a ``feature_dim`` feature layer."""

    def __init__(self, classes: int = 10, feature_dim: int = 64):
        super().__init__()
        self.config = {"classes": classes, "feature_dim": feature_dim}
        self.body = conv_classifier_body(3, feature_dim)
        self.head = nn.Linear(feature_dim, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _augment(x: torch.Tensor, g: torch.Generator, noise: float = 0.0) -> torch.Tensor:
    """Random horizontal flip of the batch and shifts of up to 2 pixels (reflect padding);
    with ``noise`` > 0, Gaussian noise of an sd drawn per image uniformly in [0, noise]."""
    if torch.rand(1, generator=g).item() < 0.5:
        x = x.flip(-1)
    pad = F.pad(x, (2, 2, 2, 2), mode="reflect")
    dx, dy = torch.randint(0, 5, (2,), generator=g).tolist()
    x = pad[:, :, dy:dy + x.shape[-2], dx:dx + x.shape[-1]]
    if noise > 0:
        sd = noise * torch.rand(len(x), 1, 1, 1, generator=g)
        x = x + (sd * torch.randn(x.shape, generator=g)).to(x.device)
    return x


def train_colour_classifier(images: torch.Tensor, labels: torch.Tensor, classes: int, steps: int,
                            batch_size: int, lr: float, seed: int = 0, progress: bool = True,
                            device: torch.device | str = "cpu", noise: float = 0.0) -> ColourClassifier:
    """Cross-entropy with flips, shifts and (``noise`` > 0) added pixel noise, AdamW with a
    one-cycle learning rate; batches from a seeded CPU generator. Returned on the CPU in eval mode."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ColourClassifier(classes).to(device)
    return fit_classifier(model, images, labels, steps, batch_size, lr, g,
                          lambda x, gen: _augment(x, gen, noise), progress, device, desc="colour classifier")


class ColourJudge:
    """The colour data set's judge: classifier, reference features, training pool for floors
    (computed once per N)."""

    def __init__(self, classifier: ColourClassifier, data: str, info: dict):
        self.classifier, self.data, self.info = classifier.eval(), data, info
        self.test_x, self.test_y = colour_data(data, "test")
        self.pool = colour_data(data, "train")[0]
        self.test_features, pred, _ = classify(classifier, self.test_x)
        self.test_accuracy = (pred == self.test_y).double().mean().item()
        self._floors: dict[int, dict] = {}

    def floor(self, n: int) -> dict:
        if n not in self._floors:
            self._floors[n] = frechet_floor(self.classifier, self.pool, self.test_features, n,
                                            draws=FLOOR_DRAWS)
        return self._floors[n]

    def accuracy(self, noise_sd: float = 0.0, seed: int = 0) -> float:
        """Accuracy on the held-out split with Gaussian pixel noise of sd ``noise_sd`` added
        (seeded), before clipping to [-1, 1] as ``evaluate`` does."""
        if noise_sd == 0:
            return self.test_accuracy
        noise = torch.randn(self.test_x.shape, generator=torch.Generator().manual_seed(seed))
        pred = classify(self.classifier, (self.test_x + noise_sd * noise).clamp(-1, 1))[1]
        return (pred == self.test_y).double().mean().item()

    def evaluate(self, samples: torch.Tensor) -> dict:
        """FD of ``samples`` ([N, 3, 32, 32] in [-1, 1], clipped) against the reference split,
        the floor at the same N and their ratio, the confident fraction and class histogram."""
        x = samples.detach().float().cpu().clamp(-1, 1)
        feats, pred, conf = classify(self.classifier, x)
        out = {"n_samples": len(x), "frechet": frechet_from_features(feats, self.test_features),
               "confident_fraction": (conf > 0.9).double().mean().item(),
               "class_histogram": (torch.bincount(pred, minlength=self.classifier.config["classes"]).double()
                                   / len(x)).tolist(),
               **self.floor(len(x))}
        out["frechet_ratio"] = out["frechet"] / max(out["frechet_floor"], 1e-12)
        return out

    def describe(self) -> dict:
        return {"data": self.data, **JUDGE_RECIPES[self.data], "test_accuracy": self.test_accuracy,
                "reference": f"{self.data} test[0:{len(self.test_x)}]",
                "floor_pool": f"{self.data} train[0:{len(self.pool)}]", "floor_draws": FLOOR_DRAWS,
                "trained_now": self.info["trained_now"]}


_JUDGES: dict[str, ColourJudge] = {}


def load_colour_judge(data: str, progress: bool = True, download: bool = True) -> ColourJudge:
    """The judge of ``data`` ("synthetic" or "cifar10"), trained once by ``JUDGE_RECIPES[data]``
    on the whole training split and cached (on disk and in memory)."""
    _check_data(data)
    if data not in _JUDGES:
        recipe, classes = JUDGE_RECIPES[data], num_classes(data)
        spec = {"data": data, **(SYNTHETIC_SPLITS["train"] if data == "synthetic" else {"split": "train"})}
        key = cache_key({"classifier": ColourClassifier(classes).config, "seed": 0, **recipe}, spec)

        def train():
            x, y = colour_data(data, "train", download=download)
            return train_colour_classifier(x, y, classes, seed=0, progress=progress,
                                           device=pick_device(), **recipe)

        classifier, info = load_or_train_weights(cache_dir() / f"colour-classifier-{key}.pt",
                                                 ColourClassifier(classes), train)
        _JUDGES[data] = ColourJudge(classifier, data, info)
    return _JUDGES[data]
