"""Deterministic renderer of the toy world: one shape on a plain background, 64x64 RGB.

Every shape is drawn with its *centroid* on the position's centre (``captions.POSITIONS``), with half-extent
``HALF_EXTENT[size]`` (circle radius, half the square's side, half the triangle's base and height; the triangle
points up). A seed adds small jitter: centre +-``POSITION_JITTER`` px, extent x(1 +- ``SIZE_JITTER``), shape color
+-``COLOR_JITTER`` and background gray level. Edges are anti-aliased by 4x4 supersampling.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .captions import COLORS, POSITIONS, parse_caption

IMAGE_SIZE = 64
HALF_EXTENT = {"small": 7.0, "large": 14.0}
BACKGROUND_GRAY = 232
BACKGROUND_JITTER = 8
POSITION_JITTER = 1.5
SIZE_JITTER = 0.05
COLOR_JITTER = 6
SUPERSAMPLE = 4


def _coverage(shape: str, cx: float, cy: float, h: float, size: int = IMAGE_SIZE) -> np.ndarray:
    """Fraction of each pixel covered by the shape, shape ``(size, size)`` in [0, 1]."""
    s = SUPERSAMPLE
    grid = (np.arange(size * s, dtype=np.float64) + 0.5) / s
    x, y = grid[None, :], grid[:, None]
    if shape == "circle":
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= h * h
    elif shape == "square":
        inside = (np.abs(x - cx) <= h) & (np.abs(y - cy) <= h)
    elif shape == "triangle":  # apex at top; centroid at (cx, cy): apex cy - 4h/3, base cy + 2h/3
        top, bottom = cy - 4.0 * h / 3.0, cy + 2.0 * h / 3.0
        half_width = h * (y - top) / (2.0 * h)
        inside = (y >= top) & (y <= bottom) & (np.abs(x - cx) <= half_width)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return inside.reshape(size, s, size, s).mean(axis=(1, 3))


def render(caption: str, seed: int = 0) -> np.ndarray:
    """Render ``caption`` as a ``(64, 64, 3)`` uint8 array; the same (caption, seed) always gives the same pixels."""
    c = parse_caption(caption)
    rng = np.random.default_rng([int(seed), 7_919])
    cx, cy = POSITIONS[c.position]
    cx += rng.uniform(-POSITION_JITTER, POSITION_JITTER)
    cy += rng.uniform(-POSITION_JITTER, POSITION_JITTER)
    h = HALF_EXTENT[c.size] * (1.0 + rng.uniform(-SIZE_JITTER, SIZE_JITTER))
    color = np.clip(np.array(COLORS[c.color], dtype=np.float64) + rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, 3),
                    0, 255)
    background = np.full(3, BACKGROUND_GRAY + rng.integers(-BACKGROUND_JITTER, BACKGROUND_JITTER + 1), np.float64)
    alpha = _coverage(c.shape, cx, cy, h)[..., None]
    image = alpha * color + (1.0 - alpha) * background
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render_batch(captions: list[str], seeds: list[int] | np.ndarray) -> np.ndarray:
    """Render many captions: ``(N, 64, 64, 3)`` uint8."""
    if len(captions) != len(seeds):
        raise ValueError(f"render_batch: {len(captions)} captions but {len(seeds)} seeds")
    out = np.empty((len(captions), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    for i, (caption, seed) in enumerate(zip(captions, seeds)):
        out[i] = render(caption, int(seed))
    return out


def render_pil(caption: str, seed: int = 0) -> Image.Image:
    return Image.fromarray(render(caption, seed))
