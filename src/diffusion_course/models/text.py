"""Networks that read text (chapter 17): a CLIP-style encoder pair and a U-Net steered by a
caption through cross-attention.

- ``TextEncoder``: token ids -> a vector per token (a small transformer), and one vector
  for the whole caption (the output at a start position that every caption has).
- ``ImageEncoder``: a digit -> one vector (a small CNN).
- ``ContrastivePair`` (Radford et al. 2021, "CLIP"): both, with unit-length embeddings and a
  learned temperature; ``contrastive_loss`` is the symmetric cross-entropy over the N x N
  matrix of a batch's similarities.
- ``TextConditionedUNet``: a frozen text encoder feeding the token vectors to the
  cross-attention of a U-Net (``unet.CrossAttention``), as in Stable Diffusion (Rombach et
  al. 2022). The empty caption (all padding) is its "no condition" for guidance.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .unet import UNet

PAD_ID = 0   # ``data.captions.Tokeniser``'s padding id: the empty caption is all PAD_ID


class TextEncoder(nn.Module):
    """Token ids [B, L] -> (token vectors [B, 1 + L, width], mask [B, 1 + L], caption
    vector [B, embed_dim]).

    A learned start vector goes in front of every caption (so even the empty caption has one
    position to attend to), each token gets its word's embedding plus a position embedding,
    and ``layers`` pre-norm transformer layers mix them, padding masked out. The caption
    vector is the start position's output, projected."""

    def __init__(self, vocab_size: int, length: int, width: int = 64, layers: int = 2, heads: int = 4,
                 embed_dim: int = 64):
        super().__init__()
        self.config = dict(vocab_size=vocab_size, length=length, width=width, layers=layers,
                           heads=heads, embed_dim=embed_dim)
        self.words = nn.Embedding(vocab_size, width)
        self.start = nn.Parameter(torch.zeros(1, 1, width))
        self.positions = nn.Parameter(0.02 * torch.randn(1, 1 + length, width))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True,
                                       norm_first=True) for _ in range(layers))
        self.norm, self.project = nn.LayerNorm(width), nn.Linear(width, embed_dim)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if ids.dim() != 2 or ids.shape[1] != self.config["length"]:
            raise ValueError(f"token ids must be [B, {self.config['length']}] (Tokeniser.encode), "
                             f"got {tuple(ids.shape)}")
        mask = torch.cat([torch.ones_like(ids[:, :1], dtype=torch.bool), ids != PAD_ID], dim=1)
        h = torch.cat([self.start.expand(len(ids), -1, -1), self.words(ids)], dim=1) + self.positions
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=~mask)
        h = self.norm(h)
        return h, mask, self.project(h[:, 0])


class ImageEncoder(nn.Module):
    """A digit [B, 1, 28, 28] -> a vector [B, embed_dim]: three 3x3 convolutions (28 -> 14 -> 7),
    a mean over positions, a linear map."""

    def __init__(self, width: int = 32, embed_dim: int = 64):
        super().__init__()
        self.config = dict(width=width, embed_dim=embed_dim)
        self.convs = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.GroupNorm(8, width), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * width), nn.SiLU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.GroupNorm(8, 4 * width), nn.SiLU())
        self.project = nn.Linear(4 * width, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.convs(x).mean((2, 3)))


class ContrastivePair(nn.Module):
    """An image encoder and a text encoder whose unit-length outputs are compared by cosine
    similarity, scaled by a learned 1/temperature = exp(``log_scale``) (CLIP starts it at
    1/0.07 and caps it at 100)."""

    MAX_SCALE = 100.0
    null_condition = PAD_ID   # the training loop's sign that this model takes a condition (captions)

    def __init__(self, text: TextEncoder, image: ImageEncoder):
        super().__init__()
        if text.config["embed_dim"] != image.config["embed_dim"]:
            raise ValueError("the two encoders must embed into the same width")
        self.text, self.image = text, image
        self.config = {"text": text.config, "image": image.config}
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def embed_images(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(x), dim=-1)

    def embed_texts(self, ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(ids)[2], dim=-1)

    def scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=self.MAX_SCALE)

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The logits [N, N]: entry (i, j) = scale * cos(image i, caption j)."""
        return self.scale() * self.embed_images(images) @ self.embed_texts(ids).T


def contrastive_loss(logits: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric loss on a batch's N x N logits, where pair (i, i) belongs together:
    the mean of the cross-entropy of each image's row (which caption is mine?) and of each
    caption's column (which image is mine?), the right answer being the diagonal."""
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class TextConditionedUNet(nn.Module):
    """eps/v(x_t, t, caption): a U-Net with cross-attention (``UNet(context_dim=...)``) reading
    the token vectors of a frozen ``TextEncoder``. Its condition is token ids [B, L] in the
    samplers' ``labels`` slot; ``null_condition`` (the padding id) fills the empty caption,
    which caption dropout trains and classifier-free guidance subtracts."""

    null_condition = PAD_ID

    def __init__(self, text: TextEncoder, unet: UNet):
        super().__init__()
        if unet.config.get("context_dim") != text.config["width"]:
            raise ValueError("the U-Net's context_dim must be the text encoder's width")
        self.text, self.unet = text.requires_grad_(False), unet
        self.config = {"text": dict(text.config),
                       "unet": {k: list(v) if isinstance(v, tuple) else v for k, v in unet.config.items()}}

    def check_condition(self, ids: torch.Tensor, batch: int) -> None:
        """The samplers' check of a condition: [batch, L] ids of the vocabulary."""
        length, vocab = self.text.config["length"], self.text.config["vocab_size"]
        if ids.shape != (batch, length) or ids.min() < 0 or ids.max() >= vocab:
            raise ValueError(f"captions must be {batch} rows of {length} token ids in 0..{vocab - 1} "
                             f"(Tokeniser.encode), got shape {tuple(ids.shape)}")

    def forward(self, x: torch.Tensor, t: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        if ids is None:
            ids = torch.full((len(x), self.text.config["length"]), PAD_ID, dtype=torch.long, device=x.device)
        with torch.no_grad():      # frozen: the caption's vectors are an input, not trained
            tokens, mask, _ = self.text(ids)
        return self.unet(x, t, context=(tokens, mask))
