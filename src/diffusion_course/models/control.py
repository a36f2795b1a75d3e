"""Three ways to steer a trained, frozen U-Net (chapter 16), each built so that before any
training the steered model computes exactly what the base model computes:

- ``NewLabels``: extra rows for the label-embedding table (textual inversion's new "word",
  DreamBooth's identifier); the base's own rows are untouched.
- ``LoRA``: a layer W plus a low-rank update B A (Hu et al. 2022), B initialised to zero;
  ``add_lora`` puts adapters on the chosen layers, ``merge_lora`` folds them into W.
- ``ControlNet`` (Zhang, Rao and Agrawala 2023): a trainable copy of the U-Net's encoder reads a
  structure map, and adds to the frozen U-Net's skips through zero-initialised convolutions.
"""
from __future__ import annotations

import copy
import re

import torch
import torch.nn as nn
from torch.func import functional_call

from .unet import UNet


# ---------------------------------------------------------------------------------------
# New labels
# ---------------------------------------------------------------------------------------
class NewLabels(nn.Module):
    """``base`` (a class-conditional U-Net) with ``len(vectors)`` new label embeddings, the
    labels ``base.num_classes + 1``, ``+ 2``, ... (after the null label). The base's table
    is used as it is: only ``self.vectors`` is new."""

    def __init__(self, base: UNet, vectors: torch.Tensor):
        super().__init__()
        if base.num_classes is None:
            raise ValueError("new labels need a class-conditional U-Net (one with num_classes)")
        self.base, self.num_classes = base, base.num_classes
        self.vectors = nn.Parameter(vectors.detach().clone().reshape(-1, base.label_emb.embedding_dim))
        self.num_labels = base.num_classes + 1 + len(self.vectors)

    def new_label(self, i: int = 0) -> int:
        """The label id of new vector ``i``."""
        return self.num_classes + 1 + i

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        table = torch.cat([self.base.label_emb.weight, self.vectors])   # [11 + n, emb]
        return functional_call(self.base, {"label_emb.weight": table}, (x, t, labels))


# ---------------------------------------------------------------------------------------
# LoRA
# ---------------------------------------------------------------------------------------
class LoRA(nn.Module):
    """y = W x + B (A x), with W the frozen ``layer``, A: input -> ``rank`` channels (a layer
    of W's shape, kernel and stride included) and B: ``rank`` -> output (1 x 1), B = 0 at
    the start. For a linear layer B A is a rank-r matrix; for a k x k convolution it is a
    rank-r matrix over (input channel, kernel position) pairs. A adds r * c_in * k^2
    parameters and B c_out * r, against W's c_out * c_in * k^2."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, rank: int):
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be at least 1, got {rank}")
        self.layer, self.rank = layer.requires_grad_(False), rank
        if isinstance(layer, nn.Conv2d):
            self.A = nn.Conv2d(layer.in_channels, rank, layer.kernel_size, layer.stride,
                               layer.padding, bias=False)
            self.B = nn.Conv2d(rank, layer.out_channels, 1, bias=False)
        elif isinstance(layer, nn.Linear):
            self.A = nn.Linear(layer.in_features, rank, bias=False)
            self.B = nn.Linear(rank, layer.out_features, bias=False)
        else:
            raise TypeError(f"LoRA wraps nn.Conv2d or nn.Linear, got {type(layer).__name__}")
        nn.init.zeros_(self.B.weight)     # B A = 0: the adapted layer starts as W, exactly

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x) + self.B(self.A(x))

    def delta(self) -> torch.Tensor:
        """B A in W's shape: [c_out, c_in(, k, k)]."""
        w = self.B.weight.flatten(1) @ self.A.weight.flatten(1)
        return w.reshape(self.layer.weight.shape)


# The layers chapter 16 adapts: the 3 x 3 convolutions of the residual blocks and the attention
# projections of the 7 x 7 level and the middle, where a digit's shape is decided (not the
# 14 x 14 level, the stem, the head, the 1 x 1 skips or the time-embedding projections).
LORA_TARGETS = r"((down\.1|up\.0)\.\d+\.(res\.conv[12]|attn\.(qkv|out)))|(mid[12]\.conv[12])|(mid_attn\.(qkv|out))"


def add_lora(model: nn.Module, rank: int, targets: str = LORA_TARGETS) -> nn.Module:
    """A copy of ``model`` with every parameter frozen and a ``LoRA`` adapter of ``rank`` on
    each Conv2d and Linear whose whole name matches the regular expression ``targets``; only
    the adapters train."""
    model = copy.deepcopy(model).requires_grad_(False)
    chosen = [name for name, m in model.named_modules()
              if isinstance(m, (nn.Conv2d, nn.Linear)) and re.fullmatch(targets, name)]
    if not chosen:
        raise ValueError(f"no Conv2d or Linear layer matches {targets!r}")
    for name in chosen:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, LoRA(getattr(owner, child), rank))
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with each ``LoRA`` folded into its layer, W <- W + B A: the same
    function, no extra cost per call."""
    model = copy.deepcopy(model)
    for name, m in list(model.named_modules()):
        if isinstance(m, LoRA):
            m.layer.weight.data += m.delta()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, m.layer)
    return model


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------
# ControlNet
# ---------------------------------------------------------------------------------------
def zero_conv(c_in: int, c_out: int) -> nn.Conv2d:
    """A 1 x 1 convolution with weights and bias 0: it outputs 0 until training moves it."""
    conv = nn.Conv2d(c_in, c_out, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ControlNet(nn.Module):
    """The frozen U-Net ``base``, steered by a structure map c [B, 1, H, W] in {0, 1}:

        h_c         = copy.stem(x) + Z_in(E(c))                   E: a small conv encoder of c
        skips_c, m_c = copy.encode(h_c)                            the copy starts as base's encoder
        output      = base.decode(m + Z_m(m_c), [s + Z_i(s_c_i)])  Z: zero-initialised 1 x 1 convs

    Every Z is 0 at the start, so the output is the base model's exactly; the gradient of
    the loss reaches Z's weights through the copy's (non-zero) features, so they move at the
    first step. Only the copy, E and the Z's train."""

    def __init__(self, base: UNet, hidden: int = 32):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.num_classes = base.num_classes
        self.config = {**base.config, "control": "skeleton", "hint_hidden": hidden}
        copy_ = copy.deepcopy(base).requires_grad_(True)
        copy_.up, copy_.upsample, copy_.head = None, None, None       # the encoder half only
        self.copy = copy_
        patch, width = base.config["patch"], base.config["base"]
        self.hint = nn.Sequential(nn.PixelUnshuffle(patch),               # c to the stem's size
                                  nn.Conv2d(patch ** 2, hidden, 3, padding=1), nn.SiLU(),
                                  nn.Conv2d(hidden, hidden, 3, padding=1), nn.SiLU(),
                                  zero_conv(hidden, width))
        self.zero = nn.ModuleList(zero_conv(c, c) for c in base.encoder_widths)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None,
                structure: torch.Tensor | None = None) -> torch.Tensor:
        base = self.base
        emb = base.embed(torch.as_tensor(t, device=x.device), labels, x.shape[0])
        mid, skips = base._encode(base.stem(base.fold(x)), emb)
        if structure is not None:
            c_emb = self.copy.embed(torch.as_tensor(t, device=x.device), labels, x.shape[0])
            h = self.copy.stem(self.copy.fold(x)) + self.hint(structure.to(x.dtype))
            c_mid, c_skips = self.copy._encode(h, c_emb)
            skips = [s + z(c) for s, z, c in zip(skips, self.zero, c_skips)]
            mid = mid + self.zero[-1](c_mid)
        return base.unfold(base.head(base._decode(mid, skips, emb)))


def _check_structure(structure: torch.Tensor, x: torch.Tensor) -> None:
    if structure.shape[0] != x.shape[0] or structure.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"structure {tuple(structure.shape)} must match the images {tuple(x.shape)}")


def with_structure(model: ControlNet, structure: torch.Tensor):
    """``model`` as a plain eps/v network f(x, t, labels) for the samplers, with the structure
    maps fixed (one per image of the batch)."""
    def net(x, t, labels=None):
        _check_structure(structure, x)
        return model(x, t, labels, structure.to(x.device))
    net.num_classes = model.num_classes
    return net

