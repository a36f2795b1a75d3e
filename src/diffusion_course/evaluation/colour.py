"""The judge of chapter 14's colour images, with the same protocol as MNIST's (``judge.Judge``).

Data (``data.cifar.colour_data``): CIFAR-10 in the ``gpu`` profile, or the synthetic shapes in
``ci`` and ``cpu``. Each has a training split (what the diffusion model and the judge learn
from, and what floors are drawn from) and a held-out reference split (what generated images
are compared with).

The judge (``ColourJudge``): ``models.classifier.ImageClassifier`` for 3 channels with a 64-d
feature layer, trained by one recipe per *data set* (``JUDGE_RECIPES``), whatever the profile:
the ``ci`` and ``cpu`` profiles, which both use the synthetic set, get the very same judge.
The synthetic set's recipe adds Gaussian pixel noise (sd uniform in [0, 0.3] per image) to
the training batches: trained on clean shapes only (this recipe without the noise), the
same classifier labels held-out shapes near chance once noise of sd 0.1 is added (0.30
accuracy), so it reads a sample's speckle instead of its shape.
``ColourJudge.accuracy(noise_sd)`` checks the judge on noisy held-out images.
Generated images are scored by the Frechet distance between their features and the
reference split's, next to the real-vs-real floor at
the same N (``judge.frechet_floor``: N random training images against the same reference,
the mean over 10 seeded draws). The ratio FD / floor reads like the MNIST judge's: 1 is as
close as real images get at this N.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.cifar import SYNTHETIC_SPLITS, check_colour_data, colour_data, num_classes
from ..data.paths import cache_dir
from ..models.classifier import ImageClassifier
from ..training.cache import cache_key, seeded
from ..training.classifier import fit_classifier
from ..training.device import pick_device
from .judge import FLOOR_DRAWS, Judge, cached_classifier

JUDGE_RECIPES = {"synthetic": {"steps": 300, "batch_size": 64, "lr": 3e-3, "noise": 0.3},
                 "cifar10": {"steps": 8_000, "batch_size": 128, "lr": 3e-3}}
FEATURES = 64       # the colour judge's feature layer


def colour_classifier(classes: int) -> ImageClassifier:
    return ImageClassifier(in_channels=3, classes=classes, feature_dim=FEATURES)


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
                            device: torch.device | str = "cpu", noise: float = 0.0) -> ImageClassifier:
    """The course's classifier recipe (``training.classifier``) with flips, shifts and
    (``noise`` > 0) added pixel noise; batches from a seeded CPU generator. Returned on the CPU
    in eval mode."""
    g = torch.Generator().manual_seed(seed)
    return seeded(lambda: fit_classifier(colour_classifier(classes).to(device), images, labels, steps,
                                         batch_size, lr, g, lambda x, gen: _augment(x, gen, noise), progress,
                                         device, desc="colour classifier"), seed)


class ColourJudge(Judge):
    """The colour data set's judge: the held-out split is the reference, the training split
    the floors' pool."""

    def __init__(self, classifier: ImageClassifier, data: str, info: dict):
        test_x, test_y = colour_data(data, "test")
        super().__init__(classifier, test_x, test_y, colour_data(data, "train")[0], info)
        self.data = data

    def accuracy(self, noise_sd: float = 0.0, seed: int = 0) -> float:
        """Accuracy on the held-out split with Gaussian pixel noise of sd ``noise_sd`` added
        (seeded), before clipping to [-1, 1] as ``evaluate`` does."""
        if noise_sd == 0:
            return self.test_accuracy
        noise = torch.randn(self.test_x.shape, generator=torch.Generator().manual_seed(seed))
        pred = self.classify((self.test_x + noise_sd * noise).clamp(-1, 1))[1]
        return (pred == self.test_y).double().mean().item()

    def evaluate(self, samples: torch.Tensor) -> dict:
        """FD of ``samples`` ([N, 3, 32, 32] in [-1, 1], clipped) against the reference split,
        the floor at the same N and their ratio, the confident fraction and class histogram."""
        return self.score(samples.detach().float().cpu().clamp(-1, 1))

    def describe(self) -> dict:
        return {"data": self.data, **JUDGE_RECIPES[self.data], "test_accuracy": self.test_accuracy,
                "reference": f"{self.data} test[0:{len(self.test_x)}]",
                "floor_pool": f"{self.data} train[0:{len(self.pool)}]", "floor_draws": FLOOR_DRAWS,
                "trained_now": self.info["trained_now"]}


_JUDGES: dict[str, ColourJudge] = {}


def load_colour_judge(data: str, progress: bool = True, download: bool = True) -> ColourJudge:
    """The judge of ``data`` ("synthetic" or "cifar10"), trained once by ``JUDGE_RECIPES[data]``
    on the whole training split and cached (on disk and in memory)."""
    check_colour_data(data)
    if data not in _JUDGES:
        recipe, classes = JUDGE_RECIPES[data], num_classes(data)
        spec = {"data": data, **(SYNTHETIC_SPLITS["train"] if data == "synthetic" else {"split": "train"})}
        key = cache_key({"classifier": colour_classifier(classes).config, "seed": 0, **recipe}, spec)

        def train():
            x, y = colour_data(data, "train", download=download)
            return train_colour_classifier(x, y, classes, seed=0, progress=progress,
                                           device=pick_device(), **recipe)

        classifier, info = cached_classifier(cache_dir() / f"colour-classifier-{key}.pt",
                                             lambda: colour_classifier(classes), train)
        _JUDGES[data] = ColourJudge(classifier, data, info)
    return _JUDGES[data]
