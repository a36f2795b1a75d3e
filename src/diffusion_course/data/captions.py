"""Captions for MNIST digits (chapter 17): every digit gets a sentence built from its label and
two attributes measured on its pixels, and a tokeniser turns sentences into integer ids.

The attributes, each computed from the image by a rule (images in [-1, 1], ink = above 0):

- **thickness**: the fraction of the ink that survives one 3 x 3 erosion. A stroke at most
  2 pixels wide erodes away completely (0); a bold one keeps its core (0.3 and more).
- **slant**: the shear of the ink, sum u (x - x_bar)(y - y_bar) / sum u (y - y_bar)^2 with the
  intensities u as weights and y pointing up: how many pixels the ink moves right per pixel
  up. Positive leans right.

Each is put in one of three levels by the terciles of the training digits **of the same
class** (a thick one is thick for a one): "thin" / unsaid / "thick", "leaning left" / unsaid /
"leaning right". The middle level is not mentioned, so a caption has 0, 1 or 2 attributes.

Caption templates and synonyms make the same content come in different words ("a thick
seven leaning right", "7, bold, slanted right"). One (thickness, slant) combination per digit
is **held out**: no training caption names it (such digits are captioned with one of their
two attributes), so asking for it tests whether the model composes what it learned apart.
"""
from __future__ import annotations

import re

import torch

from .mnist import binarise
from .structure import erode

ATTRIBUTES = ("thickness", "slant")
LEVELS = {"thickness": ("thin", None, "thick"), "slant": ("left", None, "right")}
SYNONYMS = {"thin": ("thin", "light", "fine"), "thick": ("thick", "bold", "heavy"),
            "left": ("leaning left", "slanted left", "tilted left"),
            "right": ("leaning right", "slanted right", "tilted right")}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = 4
# The held-out (thickness, slant) level of each digit: digit d never hears combination d % 4.
EXTREMES = ((0, 0), (0, 2), (2, 0), (2, 2))       # thin-left, thin-right, thick-left, thick-right
HELD_OUT = {d: EXTREMES[d % 4] for d in range(10)}


# ---------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------
def thickness(images: torch.Tensor) -> torch.Tensor:
    """Per image [B, 1, H, W]: the fraction of its ink pixels that survive one 3 x 3 erosion."""
    ink = binarise(images)
    return erode(ink).sum((1, 2, 3)) / ink.sum((1, 2, 3)).clamp(min=1)


def slant(images: torch.Tensor) -> torch.Tensor:
    """Per image [B, 1, H, W]: the intensity-weighted shear of the ink, pixels right per pixel
    up (positive leans right, as in italics)."""
    u = ((images.float() + 1) / 2).clamp(0, 1)[:, 0]                  # [B, H, W], ink = 1
    h, w = u.shape[-2:]
    y = torch.arange(h - 1, -1, -1, dtype=u.dtype)[:, None].expand(h, w)   # row 0 is the top
    x = torch.arange(w, dtype=u.dtype)[None, :].expand(h, w)
    mass = u.sum((1, 2)).clamp(min=1e-6)
    dx = x - ((u * x).sum((1, 2)) / mass)[:, None, None]
    dy = y - ((u * y).sum((1, 2)) / mass)[:, None, None]
    return (u * dx * dy).sum((1, 2)) / (u * dy * dy).sum((1, 2)).clamp(min=1e-6)


def measure(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Both attributes of each image: {"thickness": [B], "slant": [B]}."""
    return {"thickness": thickness(images), "slant": slant(images)}


class AttributeScale:
    """Per class and attribute, the terciles and the median of the training digits: the
    thresholds that turn a measurement into a level (0, 1, 2) and decide a match."""

    def __init__(self, values: dict[str, torch.Tensor], labels: torch.Tensor):
        """``values``: ``measure(images)`` of the digits the scale is made from, ``labels`` theirs."""
        q = torch.tensor([1 / 3, 0.5, 2 / 3])
        # [10, 3] per attribute: lower tercile, median, upper tercile of each class
        self.cuts = {a: torch.stack([torch.quantile(values[a][labels == c], q) for c in range(10)])
                     for a in ATTRIBUTES}

    def levels(self, values: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """0 below the class's lower tercile, 2 above its upper one, 1 between."""
        out = {}
        for a in ATTRIBUTES:
            lo, hi = self.cuts[a][labels, 0], self.cuts[a][labels, 2]
            out[a] = (values[a] > lo).long() + (values[a] > hi).long()
        return out

    def matches(self, values: dict[str, torch.Tensor], labels: torch.Tensor,
                asked: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per attribute, whether each sample lies on the asked side of its class's median
        (level 0: below, level 2: above); False where the attribute was not asked (level 1),
        with ``asked[a] != 1`` telling which entries count."""
        out = {}
        for a in ATTRIBUTES:
            above = values[a] > self.cuts[a][labels, 1]
            out[a] = torch.where(asked[a] == 2, above, ~above) & (asked[a] != 1)
        return out


def held_out_levels(labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The held-out (thickness, slant) levels of each digit's class: {"thickness": [B], "slant": [B]}."""
    held = torch.tensor([HELD_OUT[d] for d in range(10)])[labels]     # [B, 2]
    return {"thickness": held[:, 0], "slant": held[:, 1]}


def hold_out(labels: torch.Tensor, levels: dict[str, torch.Tensor]) -> torch.Tensor:
    """Which digits have their class's held-out (thickness, slant) combination: [B] bool."""
    held = held_out_levels(labels)
    return (levels["thickness"] == held["thickness"]) & (levels["slant"] == held["slant"])


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------
def _article(word: str) -> str:
    return "an" if word[0] in "e8" else "a"


def caption(digit: int, thickness_level: int, slant_level: int, template: int = 0,
            synonym: int = 0, numeral: bool = False) -> str:
    """The sentence for a digit and its levels (1 = not mentioned), in one of ``TEMPLATES``
    templates, with the ``synonym``-th word of each attribute and the digit as a word or a
    numeral: (7, 2, 2, 0) -> "a thick seven leaning right", (7, 2, 2, 1, 1, True) ->
    "7, bold, slanted right"."""
    if not 0 <= digit <= 9 or not 0 <= template < TEMPLATES:
        raise ValueError(f"digit must be 0-9 and template 0-{TEMPLATES - 1}, got {digit}, {template}")
    name = str(digit) if numeral else NUMBER_WORDS[digit]
    thick = LEVELS["thickness"][thickness_level]
    lean = LEVELS["slant"][slant_level]
    thick = SYNONYMS[thick][synonym % 3] if thick else None
    lean = SYNONYMS[lean][synonym % 3] if lean else None
    said = [w for w in (thick, lean) if w]
    if template == 0:                  # "a thick seven leaning right"
        words = [w for w in (thick, name, lean) if w]
        return f"{_article(words[0])} {' '.join(words)}"
    if template == 1:                  # "seven, thick, leaning right"
        return ", ".join([name, *said])
    if template == 2:                  # "a handwritten seven that is thick and leaning right"
        return f"a handwritten {name}" + (f" that is {' and '.join(said)}" if said else "")
    return f"the digit {name}" + "".join(f", {w}" for w in said)   # "the digit seven, thick, ..."


def captions_for(labels: torch.Tensor, levels: dict[str, torch.Tensor], generator: torch.Generator,
                 training: bool = True) -> list[str]:
    """One caption per digit, template, synonyms and word/numeral drawn from ``generator``.
    With ``training``, a digit of its class's held-out combination is described by one of
    its two attributes only (drawn too), so no training caption names the combination."""
    n = len(labels)
    template = torch.randint(0, TEMPLATES, (n,), generator=generator)
    synonym = torch.randint(0, 3, (n,), generator=generator)
    numeral = torch.rand(n, generator=generator) < 0.3
    drop_slant = torch.rand(n, generator=generator) < 0.5
    thick, lean = levels["thickness"].clone(), levels["slant"].clone()
    if training:
        held = hold_out(labels, levels)
        lean[held & drop_slant] = 1
        thick[held & ~drop_slant] = 1
    return [caption(int(d), int(a), int(b), int(t), int(s), bool(u))
            for d, a, b, t, s, u in zip(labels, thick, lean, template, synonym, numeral)]


# ---------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------
PAD = "<pad>"        # fills a caption up to the context length; the empty caption is all pads
UNKNOWN = "<unk>"    # any word the vocabulary lacks
CONTEXT_LENGTH = 12  # tokens per caption (the longest template needs 9)


class Tokeniser:
    """Words to integer ids, written out: lower-case, split into words and commas, look each
    up in a fixed vocabulary (every word the templates use, the number words and numerals,
    and a few more a student may type), pad to ``CONTEXT_LENGTH`` with id 0.

        "A thick 7, leaning right" -> ["a", "thick", "7", ",", "leaning", "right"]
                                   -> [3, 17, 43, 2, 20, 24, 0, 0, 0, 0, 0, 0]
    """

    WORDS = (PAD, UNKNOWN, ",", "a", "an", "the", "digit", "handwritten", "that", "is", "and",
             "photo", "of", "number", "thin", "light", "fine", "thick", "bold", "heavy",
             "leaning", "slanted", "tilted", "left", "right", "upright",
             *NUMBER_WORDS, *[str(d) for d in range(10)])

    def __init__(self):
        self.vocab = {w: i for i, w in enumerate(self.WORDS)}
        self.words = {i: w for w, i in self.vocab.items()}

    def __len__(self) -> int:
        return len(self.WORDS)

    def split(self, text: str) -> list[str]:
        return re.findall(r"[a-z]+|[0-9]|,", text.lower())

    def encode(self, texts: str | list[str], length: int = CONTEXT_LENGTH) -> torch.Tensor:
        """[B, length] int64 ids (a single string gives B = 1). A caption longer than
        ``length`` tokens is an error, not silently cut."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = torch.zeros(len(texts), length, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [self.vocab.get(w, self.vocab[UNKNOWN]) for w in self.split(text)]
            if len(ids) > length:
                raise ValueError(f"the caption {text!r} has {len(ids)} tokens; at most {length} "
                                 f"fit the text encoder's context")
            out[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def decode(self, ids: torch.Tensor) -> list[str]:
        """The words of each row, pads left out (commas rejoined)."""
        rows = ids.reshape(-1, ids.shape[-1]).tolist()
        return [" ".join(self.words[i] for i in row if i != 0).replace(" ,", ",") for row in rows]
