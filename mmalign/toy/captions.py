"""The toy world's caption grammar: ``"a {size} {color} {shape} {position}"``.

2 sizes x 6 colors x 3 shapes x 5 positions = 180 captions. The held-out split holds out *combinations*: for each
(size, color, shape) triple, 3 of the 5 positions (chosen by rotation) are held out and 2 are kept for training, so
every attribute value and every triple appears in training, while 108 of the 180 full captions never do.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

SIZES: tuple[str, ...] = ("small", "large")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "yellow": (240, 215, 20),
    "purple": (140, 40, 180),
    "orange": (255, 125, 0),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
POSITIONS: dict[str, tuple[float, float]] = {  # (x, y) centre in pixels of a 64x64 image
    "on the left": (19.0, 32.0),
    "on the right": (45.0, 32.0),
    "at the top": (32.0, 19.0),
    "at the bottom": (32.0, 45.0),
    "in the center": (32.0, 32.0),
}
ATTRIBUTES: tuple[str, ...] = ("size", "color", "shape", "position")
CHOICES: dict[str, tuple[str, ...]] = {
    "size": SIZES, "color": tuple(COLORS), "shape": SHAPES, "position": tuple(POSITIONS),
}
NUM_HELDOUT_POSITIONS = 3


@dataclass(frozen=True)
class Caption:
    """One parsed caption of the toy grammar."""

    size: str
    color: str
    shape: str
    position: str

    def text(self) -> str:
        return f"a {self.size} {self.color} {self.shape} {self.position}"

    def replace(self, attribute: str, value: str) -> Caption:
        fields = {a: getattr(self, a) for a in ATTRIBUTES}
        fields[attribute] = value
        return Caption(**fields)


def make_caption(size: str, color: str, shape: str, position: str) -> str:
    return Caption(size, color, shape, position).text()


def parse_caption(text: str) -> Caption:
    """Parse ``"a {size} {color} {shape} {position}"`` (case and surrounding spaces ignored).

    Raises ValueError naming the offending part when the text is outside the grammar.
    """
    words = text.strip().lower().split()
    if len(words) < 6 or words[0] != "a":
        raise ValueError(f"not a toy caption (expected 'a {{size}} {{color}} {{shape}} {{position}}'): {text!r}")
    size, color, shape, position = words[1], words[2], words[3], " ".join(words[4:])
    for attribute, value in zip(ATTRIBUTES, (size, color, shape, position)):
        if value not in CHOICES[attribute]:
            raise ValueError(f"unknown {attribute} {value!r} in toy caption {text!r}; expected one of "
                             f"{list(CHOICES[attribute])}")
    return Caption(size, color, shape, position)


def all_captions() -> list[str]:
    """All 180 captions in a fixed order (size, color, shape, position nested loops)."""
    return [make_caption(*c) for c in itertools.product(SIZES, COLORS, SHAPES, POSITIONS)]


def caption_split() -> tuple[list[str], list[str]]:
    """Deterministic ``(train, heldout)`` split: 72 training and 108 held-out captions (see module docstring)."""
    positions = list(POSITIONS)
    train, heldout = [], []
    for k, (size, color, shape) in enumerate(itertools.product(SIZES, COLORS, SHAPES)):
        kept = {positions[(k + j) % len(positions)] for j in range(len(positions) - NUM_HELDOUT_POSITIONS)}
        for position in positions:
            (train if position in kept else heldout).append(make_caption(size, color, shape, position))
    return train, heldout


def train_captions() -> list[str]:
    return caption_split()[0]


def heldout_captions() -> list[str]:
    return caption_split()[1]


def perturb_caption(text: str, attribute: str, rng) -> str:
    """The caption with ``attribute`` replaced by another value drawn with ``rng`` (a numpy Generator)."""
    caption = parse_caption(text)
    others = [v for v in CHOICES[attribute] if v != getattr(caption, attribute)]
    return caption.replace(attribute, others[int(rng.integers(len(others)))]).text()
