"""A small 2-D U-Net for 28x28 images: residual blocks, GroupNorm, sinusoidal time
embedding, optional self-attention at low resolution, optional class conditioning.

    28x28 --down--> 14x14 --down--> 7x7   (channel widths base * mults)
      |  skip         |  skip        |
    28x28 <--up---- 14x14 <--up---- 7x7

Each level keeps its activations for a skip connection: the up path concatenates them, so
fine detail does not have to squeeze through the 7x7 bottleneck.

``UNetTrunk`` builds everything between stem and head (and the embedding) for images or
sequences: ``UNet`` here and the 1-D U-Net of chapter 11 (``unet1d.UNet1d``) both use it,
and keep only their own stems and heads.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding (Vaswani et al.): [cos(t w_i), sin(t w_i)], w_i = max_period^(-i/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch)


def _conv(dims: int) -> type[nn.Module]:
    if dims not in (1, 2):
        raise ValueError(f"dims must be 1 (sequences) or 2 (images), got {dims!r}")
    return nn.Conv1d if dims == 1 else nn.Conv2d


class ResBlock(nn.Module):
    """GN-SiLU-conv, add the time embedding, GN-SiLU-dropout-conv, plus a skip. ``dims`` = 2
    for images [B, C, H, W], 1 for sequences [B, C, L] (the 1-D U-Net of chapter 11)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0, dims: int = 2):
        super().__init__()
        conv = _conv(dims)
        self.norm1, self.conv1 = _norm(c_in), conv(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = _norm(c_out), conv(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = conv(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: stable early training
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb).view(*h.shape[:2], *[1] * (h.dim() - 2))   # one shift per channel
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over all positions (H*W of an image, or L of a sequence with
    ``dims`` = 1); used where there are few of them, e.g. 7x7 = 49 tokens."""

    def __init__(self, ch: int, heads: int = 4, dims: int = 2):
        super().__init__()
        self.heads, self.norm = heads, _norm(ch)
        self.qkv, self.out = _conv(dims)(ch, 3 * ch, 1), _conv(dims)(ch, ch, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, -1).unbind(1)
        # softmax(q^T k / sqrt(d)) v, written out: 2-3x faster on a CPU than
        # F.scaled_dot_product_attention for these tiny, channel-first token sets.
        weights = torch.softmax(torch.einsum("bhdn,bhdm->bhnm", q, k) * q.shape[2] ** -0.5, dim=-1)
        a = torch.einsum("bhnm,bhdm->bhdn", weights, v)
        return x + self.out(a.reshape(x.shape))


class CrossAttention(nn.Module):
    """Attention from an image to a text (chapter 17): the queries come from the image's
    positions, the keys and values from the caption's token vectors,

        out = x + W_o softmax(Q K^T / sqrt(d)) V,   Q = W_q x,  K = W_k c,  V = W_v c,

    so each position reads a mix of the tokens' values. Padding tokens are masked out. W_o
    starts at zero: a U-Net given these blocks computes what it computed before them."""

    def __init__(self, ch: int, context_dim: int, heads: int = 4):
        super().__init__()
        self.heads, self.norm = heads, _norm(ch)
        self.q, self.kv = nn.Conv2d(ch, ch, 1), nn.Linear(context_dim, 2 * ch)
        self.out = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def weights(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(attention weights [B, heads, H*W, M], values [B, heads, d, M]) for the image x
        [B, C, H, W], token vectors ``context`` [B, M, D] and ``mask`` [B, M] (True: a token)."""
        b, c = x.shape[:2]
        q = self.q(self.norm(x)).reshape(b, self.heads, c // self.heads, -1)          # [B, h, d, N]
        k, v = self.kv(context).transpose(1, 2).reshape(b, 2, self.heads, c // self.heads, -1).unbind(1)
        logits = torch.einsum("bhdn,bhdm->bhnm", q, k) * q.shape[2] ** -0.5
        logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
        return torch.softmax(logits, dim=-1), v

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights, v = self.weights(x, context, mask)
        a = torch.einsum("bhnm,bhdm->bhdn", weights, v)
        return x + self.out(a.reshape(x.shape))


class Block(nn.Module):
    """A residual block, followed by self-attention at the levels that have it (and there,
    with a ``context_dim``, by cross-attention to a text)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, attention: bool,
                 dims: int = 2, context_dim: int | None = None):
        super().__init__()
        self.res = ResBlock(c_in, c_out, emb_dim, dropout, dims)
        self.attn = Attention(c_out, dims=dims) if attention else nn.Identity()
        self.cross = CrossAttention(c_out, context_dim) if attention and context_dim else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: tuple | None = None) -> torch.Tensor:
        h = self.attn(self.res(x, emb))
        return h if self.cross is None else self.cross(h, *context)


class UNetTrunk(nn.Module):
    """What the 2-D ``UNet`` and the 1-D ``unet1d.UNet1d`` share: the time (and label)
    embedding, and the trunk between stem and head (down path with skips, middle, up path).
    A subclass builds, in this order (the order fixes parameter initialisation under a seed):
    ``_build_embedding``, its own stem, ``_build_trunk``, its own head; its forward is
    ``head(_trunk(stem(x), embed(t, labels)))``, with whatever folding it needs around that.
    The subclass's ``config`` must hold ``base`` (the width of the stem's output).
    """

    def _build_embedding(self, base: int, num_classes: int | None) -> int:
        """``time_mlp`` (and ``label_emb``); returns the embedding width, 4 * base."""
        emb_dim = 4 * base
        self.time_mlp = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.num_classes = num_classes
        if num_classes is not None:  # label num_classes is the null label
            self.label_emb = nn.Embedding(num_classes + 1, emb_dim)
        return emb_dim

    def _build_trunk(self, dims: int, base: int, emb_dim: int, mults: tuple[int, ...],
                     blocks_per_level: int, attention_levels: tuple[int, ...], dropout: float,
                     context_dim: int | None = None) -> int:
        """Down path, middle, up path for ``dims``-D maps (2: images, 1: sequences) that enter
        with ``base`` channels; returns the width the head receives. With ``context_dim``,
        cross-attention to token vectors of that width follows every self-attention."""
        conv, widths = _conv(dims), [base * m for m in mults]
        # Down path: every block's output (and every downsampled map) is kept as a skip.
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skip_widths, ch = [base], base
        for level, width in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(blocks_per_level):
                blocks.append(Block(ch, width, emb_dim, dropout, level in attention_levels, dims,
                                    context_dim))
                ch = width
                skip_widths.append(ch)
            self.down.append(blocks)
            if level < len(widths) - 1:
                self.downsample.append(conv(ch, ch, 3, stride=2, padding=1))  # size / 2
                skip_widths.append(ch)

        self.mid1 = ResBlock(ch, ch, emb_dim, dropout, dims)
        self.mid_attn = Attention(ch, dims=dims)
        self.mid_cross = CrossAttention(ch, context_dim) if context_dim else None
        self.mid2 = ResBlock(ch, ch, emb_dim, dropout, dims)

        self.encoder_widths = (*skip_widths, ch)   # the skips' widths, then the middle's
        # Up path: one more block per level than the down path, each eating one skip.
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            blocks = nn.ModuleList()
            for _ in range(blocks_per_level + 1):
                blocks.append(Block(ch + skip_widths.pop(), width, emb_dim, dropout,
                                    level in attention_levels, dims, context_dim))
                ch = width
            self.up.append(blocks)
            if level > 0:
                self.upsample.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                                   conv(ch, ch, 3, padding=1)))  # size * 2
        return ch

    def embed(self, t: torch.Tensor, labels: torch.Tensor | None, batch: int) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t.expand(batch) if t.dim() == 0 else t,
                                               self.config["base"]))
        if self.num_classes is not None:
            if labels is None:  # unconditional: the null label
                labels = torch.full((batch,), self.num_classes, device=emb.device, dtype=torch.long)
            emb = emb + self.label_emb(labels)
        return emb

    def _trunk(self, h: torch.Tensor, emb: torch.Tensor, context: tuple | None = None) -> torch.Tensor:
        """The stem's output h [B, base, *size] -> the head's input [B, width, *size];
        ``context`` = (token vectors [B, M, D], mask [B, M]) where the trunk cross-attends."""
        return self._decode(*self._encode(h, emb, context), emb, context)

    def _encode(self, h: torch.Tensor, emb: torch.Tensor, context: tuple | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Down path and middle: (the middle's output, the skips, widths ``encoder_widths``)."""
        skips = [h]
        for level, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb, context)
                skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                skips.append(h)
        h = self.mid_attn(self.mid1(h, emb))
        if self.mid_cross is not None:
            h = self.mid_cross(h, *context)
        return self.mid2(h, emb), skips

    def _decode(self, h: torch.Tensor, skips: list[torch.Tensor], emb: torch.Tensor,
                context: tuple | None = None) -> torch.Tensor:
        """Up path: each block eats the last skip left (``skips`` is consumed)."""
        for level, blocks in enumerate(self.up):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb, context)
            if level < len(self.upsample):
                h = self.upsample[level](h)
        return h


class UNet(UNetTrunk):
    """An epsilon-, x0- or v-predicting U-Net (the output means whatever the loss trained).

    ``num_classes`` adds a label embedding to the time embedding; label ``num_classes`` is
    the "no label" used for label dropout and classifier-free guidance. ``context_dim`` adds
    cross-attention to token vectors of that width after every self-attention (chapter 17);
    ``forward`` then takes ``context`` = (vectors [B, M, context_dim], mask [B, M]).
    """

    def __init__(self, in_channels: int = 1, base: int = 32, mults: tuple[int, ...] = (1, 2, 2),
                 blocks_per_level: int = 1, attention_levels: tuple[int, ...] = (2,),
                 dropout: float = 0.0, num_classes: int | None = None, patch: int = 1,
                 context_dim: int | None = None):
        super().__init__()
        self.config = dict(in_channels=in_channels, base=base, mults=tuple(mults), patch=patch,
                           blocks_per_level=blocks_per_level,
                           attention_levels=tuple(attention_levels), dropout=dropout,
                           num_classes=num_classes)
        if context_dim is not None:   # only then: the files of the models without it stay valid
            self.config["context_dim"] = context_dim
        emb_dim = self._build_embedding(base, num_classes)
        # patch > 1 folds p x p pixel blocks into channels first (28x28x1 -> 14x14x4 for p = 2)
        # and unfolds them at the end: the network then never runs at full resolution.
        self.fold, self.unfold = nn.PixelUnshuffle(patch), nn.PixelShuffle(patch)
        self.stem = nn.Conv2d(in_channels * patch**2, base, 3, padding=1)
        ch = self._build_trunk(2, base, emb_dim, mults, blocks_per_level, attention_levels, dropout,
                               context_dim)
        self.head = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, in_channels * patch**2, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)  # start by predicting 0
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None,
                context: tuple | None = None) -> torch.Tensor:
        if (context is None) != (self.mid_cross is None):
            raise ValueError("a U-Net with cross-attention needs context = (token vectors, mask), "
                             "and one without it takes none")
        factor = self.config["patch"] * 2 ** (len(self.config["mults"]) - 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"image size {tuple(x.shape[-2:])} must be divisible by "
                             f"patch * 2^(levels - 1) = {factor} for this U-Net")
        emb = self.embed(torch.as_tensor(t, device=x.device), labels, x.shape[0])
        return self.unfold(self.head(self._trunk(self.stem(self.fold(x)), emb, context)))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
