"""The course's classifiers, the networks its judges look through (``evaluation``): one family
with the same interface, ``features(x)`` (the feature layer the Frechet distance is computed
on) and ``forward(x) = head(features(x))`` (class logits).

    ImageClassifier          three conv blocks on images (MNIST digits: 1 channel, 10 classes,
                             128 features; chapter 14's colour images: 3 channels, 64 features)
    SpokenDigitClassifier    three 1-D conv blocks over the frames of a log-mel spectrogram
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..data.audio import log_mel


def conv_classifier_body(in_channels: int, feature_dim: int) -> nn.Sequential:
    """Three 3x3 conv blocks (32, 64, 128 channels, BatchNorm and ReLU; max-pooling after the
    first two halve the size: 28 -> 14 -> 7, or 32 -> 16 -> 8), global average pooling and a
    ``feature_dim`` feature layer."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(128, feature_dim), nn.ReLU(),
    )


class ImageClassifier(nn.Module):
    """``conv_classifier_body`` and a linear head: the MNIST judge's network
    (``ImageClassifier()``) and, with 3 channels, chapter 14's colour judge's."""

    def __init__(self, in_channels: int = 1, classes: int = 10, feature_dim: int = 128):
        super().__init__()
        self.config = {"in_channels": in_channels, "classes": classes, "feature_dim": feature_dim}
        self.body = conv_classifier_body(in_channels, feature_dim)
        self.head = nn.Linear(feature_dim, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class SpokenDigitClassifier(nn.Module):
    """Three 1-D conv layers over the frames of a log-mel spectrogram (64 mel bands as
    channels, 129 frames), then a 128-d feature layer. Convolving over time with the bands
    as channels costs about 10M multiply-adds per clip, several times faster on a CPU than
    the same depth of 2-D convolutions over the spectrogram image."""

    def __init__(self, n_mels: int = 64, feature_dim: int = 128, width: int = 128):
        super().__init__()
        self.config = {"n_mels": n_mels, "feature_dim": feature_dim, "width": width}
        w = width
        self.body = nn.Sequential(
            nn.BatchNorm1d(n_mels),
            nn.Conv1d(n_mels, w, 5, padding=2), nn.BatchNorm1d(w), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(w, w, 3, padding=1), nn.BatchNorm1d(w), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(w, w, 3, padding=1), nn.BatchNorm1d(w), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Dropout(0.2),
            nn.Linear(w, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, 10)

    def spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        return log_mel(wave, self.config["n_mels"])

    def features(self, spec: torch.Tensor) -> torch.Tensor:
        return self.body(spec)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(spec))
