"""The toy world's judge: a deterministic score in [0, 1] of how well an image matches its caption.

Per image (all vectorised over the batch in torch):

1. background = per-channel median of the 2-pixel border; foreground = pixels farther than ``FG_THRESHOLD`` (RGB
   Euclidean, 0-255 scale) from it. Fewer than ``MIN_AREA`` foreground pixels → every term is 0 (no shape).
2. ``color``    = exp(-(|median fg RGB - palette RGB| / COLOR_SIGMA)^2)
3. ``position`` = exp(-(|fg centroid - position centre| / POSITION_SIGMA)^2)
4. ``size``     = exp(-(log(fg area / expected area of the caption's (size, shape)) / SIZE_SIGMA)^2)
5. ``shape``    = exp(-((fill - fill*) / FILL_SIGMA)^2 - ((skew - skew*) / SKEW_SIGMA)^2), where fill = area /
   bounding-box area (circle ~0.79, square ~1, triangle ~0.5) and skew = (centroid y - box centre y) / box height
   (an upward triangle's centroid sits 1/6 of its height below the box centre). The box is the span of rows and
   columns holding at least 2 foreground pixels, so isolated noise pixels do not stretch it.

``score = (color * shape * position * size) ** (1/4)``, the geometric mean of the terms: ~0.97 for a render of
its own caption, ~0.3 when one attribute is wrong, ~0.1 or less when several are; it keeps the ordering of the
product (so preference labels are those of the product) while staying informative for imperfect samples. ``weighted_score`` mixes
the terms linearly with per-user weights (the personalised preferences of the toy world).
The feature targets were calibrated on renders (``render.py``); see tests/toy for the agreement checks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .captions import ATTRIBUTES, COLORS, POSITIONS, parse_caption
from .render import HALF_EXTENT, IMAGE_SIZE

FG_THRESHOLD = 60.0
MIN_AREA = 6
COLOR_SIGMA = 45.0
POSITION_SIGMA = 8.0
SIZE_SIGMA = 0.5
FILL_SIGMA = 0.12
SKEW_SIGMA = 0.06
# (fill, skew) targets per (shape, size), measured on renders at the foreground threshold (mean over 600 each)
SHAPE_TARGETS = {
    ("circle", "small"): (0.79, 0.0), ("circle", "large"): (0.785, 0.0),
    ("square", "small"): (0.995, 0.0), ("square", "large"): (1.0, 0.0),
    ("triangle", "small"): (0.62, 0.13), ("triangle", "large"): (0.56, 0.148),
}
# expected foreground area = AREA_SCALE * factor * half_extent^2 (the geometric area; the anti-aliased edge
# pixels above the threshold add ~6% on renders)
AREA_FACTOR = {"circle": math.pi, "square": 4.0, "triangle": 2.0}
AREA_SCALE = 1.06
TERMS = ("color", "shape", "position", "size")
assert set(TERMS) == set(ATTRIBUTES)


def to_uint8_batch(images) -> torch.Tensor:
    """Images as a float tensor ``(N, H, W, 3)`` on the 0-255 scale.

    Accepts a list of PIL images, a uint8 array/tensor ``(N, H, W, 3)``, or a float tensor ``(N, 3, H, W)`` in [0, 1].
    """
    if isinstance(images, (list, tuple)):
        images = np.stack([np.asarray(im.convert("RGB")) if hasattr(im, "convert") else np.asarray(im)
                           for im in images])
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError("judge: images must be a list of PIL images, (N,H,W,3) uint8 or (N,3,H,W) float in [0,1]")
    if images.dtype == torch.uint8:
        x = images.float()
    else:
        x = images.float().clamp(0, 1).permute(0, 2, 3, 1) * 255.0
    if x.shape[-1] != 3:
        raise ValueError(f"judge: expected 3 color channels, got shape {tuple(x.shape)}")
    if x.shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE):
        x = torch.nn.functional.interpolate(x.permute(0, 3, 1, 2), size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                                            antialias=True, align_corners=False).permute(0, 2, 3, 1)
    return x


def _targets(captions: Sequence[str]) -> dict[str, torch.Tensor]:
    parsed = [parse_caption(c) for c in captions]
    return {
        "color": torch.tensor([COLORS[c.color] for c in parsed], dtype=torch.float32),
        "position": torch.tensor([POSITIONS[c.position] for c in parsed], dtype=torch.float32),
        "area": torch.tensor([AREA_SCALE * AREA_FACTOR[c.shape] * HALF_EXTENT[c.size] ** 2 for c in parsed]),
        "fill": torch.tensor([SHAPE_TARGETS[c.shape, c.size][0] for c in parsed]),
        "skew": torch.tensor([SHAPE_TARGETS[c.shape, c.size][1] for c in parsed]),
    }


def image_features(images) -> dict[str, torch.Tensor]:
    """Caption-free measurements per image: median fg color, centroid, area, fill, skew."""
    x = to_uint8_batch(images)
    n, h, w, _ = x.shape
    border = torch.cat([x[:, :2].reshape(n, -1, 3), x[:, -2:].reshape(n, -1, 3),
                        x[:, :, :2].reshape(n, -1, 3), x[:, :, -2:].reshape(n, -1, 3)], dim=1)
    background = border.median(dim=1).values
    fg = (x - background[:, None, None, :]).norm(dim=-1) > FG_THRESHOLD
    fgf = fg.float()
    area = fgf.sum(dim=(1, 2))
    masked = torch.where(fg[..., None], x, torch.full_like(x, float("nan"))).reshape(n, -1, 3)
    color = masked.nanmedian(dim=1).values.nan_to_num(0.0)
    ys = torch.arange(h, dtype=torch.float32) + 0.5
    xs = torch.arange(w, dtype=torch.float32) + 0.5
    safe_area = area.clamp(min=1.0)
    cx = (fgf.sum(dim=1) * xs).sum(dim=1) / safe_area
    cy = (fgf.sum(dim=2) * ys).sum(dim=1) / safe_area
    rows, cols = fgf.sum(dim=2) >= 2, fgf.sum(dim=1) >= 2

    def span(mask: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lo = torch.where(mask, coords, torch.full_like(coords, 1e9)).min(dim=1).values - 0.5
        hi = torch.where(mask, coords, torch.full_like(coords, -1e9)).max(dim=1).values + 0.5
        return lo, hi

    y0, y1 = span(rows, ys.expand(n, -1))
    x0, x1 = span(cols, xs.expand(n, -1))
    box_h, box_w = (y1 - y0).clamp(min=1.0), (x1 - x0).clamp(min=1.0)
    fill = (area / (box_h * box_w)).clamp(0, 1.5)
    skew = (cy - (y0 + y1) / 2) / box_h
    valid = (area >= MIN_AREA) & rows.any(dim=1) & cols.any(dim=1)
    return {"color": color, "cx": cx, "cy": cy, "area": area, "fill": fill, "skew": skew, "valid": valid}


def judge_terms(images, captions: Sequence[str] | str) -> dict[str, torch.Tensor]:
    """Per-term scores in [0, 1], each a float32 tensor ``[N]`` (keys ``color, shape, position, size``)."""
    return terms_from_features(image_features(images), captions)


def terms_from_features(f: dict[str, torch.Tensor], captions: Sequence[str] | str) -> dict[str, torch.Tensor]:
    """``judge_terms`` on precomputed ``image_features``."""
    n = f["area"].shape[0]
    if isinstance(captions, str):
        t = {k: v.expand(n, *v.shape[1:]) for k, v in _targets([captions]).items()}
    else:
        if len(captions) != n:
            raise ValueError(f"judge: {n} images but {len(captions)} captions")
        t = _targets(captions)
    valid = f["valid"].float()
    color = torch.exp(-(((f["color"] - t["color"]).norm(dim=-1) / COLOR_SIGMA) ** 2))
    centroid = torch.stack([f["cx"], f["cy"]], dim=-1)
    position = torch.exp(-(((centroid - t["position"]).norm(dim=-1) / POSITION_SIGMA) ** 2))
    size = torch.exp(-((torch.log(f["area"].clamp(min=1.0) / t["area"]) / SIZE_SIGMA) ** 2))
    shape = torch.exp(-(((f["fill"] - t["fill"]) / FILL_SIGMA) ** 2) - (((f["skew"] - t["skew"]) / SKEW_SIGMA) ** 2))
    return {k: (v * valid).float() for k, v in
            {"color": color, "shape": shape, "position": position, "size": size}.items()}


def judge(images, captions: Sequence[str] | str) -> torch.Tensor:
    """The judge's score in [0, 1], float32 ``[N]``: the geometric mean of the four terms."""
    return combine(judge_terms(images, captions))


def combine(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(color * shape * position * size) ** (1/4)``."""
    return (terms["color"] * terms["shape"] * terms["position"] * terms["size"]).clamp(min=0) ** 0.25


def weighted_score(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """A user's score: ``sum_k w_k term_k / sum_k w_k`` (a linear mix of the judge's terms)."""
    total = sum(weights.values())
    return sum(weights[k] * terms[k] for k in TERMS) / total


def best_caption(images, candidates: Sequence[str]) -> list[str]:
    """The candidate caption the judge scores highest for each image (the toy world's "captioner")."""
    f = image_features(images)
    scores = []
    for c in candidates:
        scores.append(combine(terms_from_features(f, c)))
    scores = torch.stack(scores, dim=1)
    return [candidates[i] for i in scores.argmax(dim=1).tolist()]
