"""Judge-based evaluation of a text-to-image pipeline in the toy world.

``evaluate_pipeline(pipe, captions, seeds)`` samples one image per (caption, seed) and scores it with the judge; each
image has its own initial noise (generator seed ``image_seed(seed, caption_index)``).
``compare(base, aligned)`` pairs two evaluations image by image (same caption, same seed): the win rate of aligned
over base counts ties (|difference| <= ``tie_margin``) as half a win; the mean gain is the difference of the means.
``save_side_by_side_grid`` writes a PNG with base images on the left and aligned images on the right, one
(caption, seed) per row pair.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from mmalign.evaluation.generation import SEED_STRIDE, Plan, image_seed, sample_plan
from mmalign.evaluation.stats import win_counts

from .judge_scorer import ToyJudgeScorer
from .sampling import DEFAULT_GUIDANCE, DEFAULT_STEPS

__all__ = ["SEED_STRIDE", "compare", "evaluate_pipeline", "image_seed", "save_side_by_side_grid", "score_images"]


def score_images(images: np.ndarray, captions: Sequence[str]) -> dict[str, Any]:
    """Judge scores of given images: ``{"mean", "scores", "terms": {term: mean}}``."""
    judge = ToyJudgeScorer()  # the `toy-judge` scorer of `mmalign evaluate`
    scores, terms = judge.score(images, list(captions)), judge.terms(images, list(captions))
    return {"mean": float(scores.mean()) if len(scores) else float("nan"), "scores": scores.tolist(),
            "terms": {k: float(v.mean()) for k, v in terms.items()}}


def evaluate_pipeline(pipe, captions: Sequence[str], seeds: Sequence[int], *,
                      num_inference_steps: int = DEFAULT_STEPS, guidance_scale: float = DEFAULT_GUIDANCE,
                      batch_size: int = 64, return_images: bool = False,
                      desc: str | None = "toy eval") -> dict[str, Any]:
    """Sample every (caption, seed) combination and score it with the judge.

    Returns ``{"mean", "std_over_seeds", "num_images", "captions", "seeds", "scores" (list, caption-major:
    index = caption_index * len(seeds) + seed_index), "per_caption" ({caption: mean over seeds}),
    "per_seed" (mean over captions per seed), "terms" ({term: mean})}`` plus ``"images"`` (uint8 array, same
    order) when ``return_images``. ``desc``: label of the sampling progress bar (None: no bar).
    """
    captions, seeds = list(captions), [int(s) for s in seeds]
    if not captions or not seeds:
        raise ValueError("evaluate_pipeline needs at least one caption and one seed")
    plan = Plan(captions, seeds)  # the evaluation grid of `mmalign evaluate` (mmalign.evaluation.generation)
    all_caps = [plan.prompt(k) for k in range(len(plan))]
    images = sample_plan(pipe, plan, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                         batch_size=batch_size, desc=desc)
    result = score_images(images, all_caps)
    grid = np.asarray(result["scores"]).reshape(len(captions), len(seeds))
    per_seed = grid.mean(axis=0)
    result.update(
        num_images=len(all_caps), captions=captions, seeds=seeds,
        per_caption={c: float(v) for c, v in zip(captions, grid.mean(axis=1))},
        per_seed=[float(v) for v in per_seed],
        std_over_seeds=float(per_seed.std(ddof=1)) if len(seeds) > 1 else 0.0,
        num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
    )
    if return_images:
        result["images"] = images
    return result


def compare(base: dict[str, Any], aligned: dict[str, Any], *, tie_margin: float = 0.0) -> dict[str, float]:
    """Win rate of aligned over base on matched (caption, seed) images (ties count half) and the mean gain.

    ``gain_standard_error`` is the paired standard error of the mean gain, ``std(a_i - b_i, ddof=1) / sqrt(n)`` over
    the ``n`` matched images: the sampling noise of the gain for this one trained model (the spread over training
    seeds is ``bench/toy_quality.py``'s).
    """
    if base.get("captions") != aligned.get("captions") or base.get("seeds") != aligned.get("seeds"):
        raise ValueError("compare: base and aligned must be evaluated on the same captions and seeds")
    b, a = torch.tensor(base["scores"], dtype=torch.float64), torch.tensor(aligned["scores"], dtype=torch.float64)
    diff = a - b
    return {
        **win_counts(b.numpy(), a.numpy(), tie_margin),  # the win rate of `mmalign evaluate` (evaluation.stats)
        "mean_gain": float(a.mean() - b.mean()),
        "gain_standard_error": float(diff.std() / len(diff) ** 0.5) if len(diff) > 1 else 0.0,
        "base_mean": float(b.mean()), "aligned_mean": float(a.mean()),
    }


def save_side_by_side_grid(base_images: np.ndarray, aligned_images: np.ndarray, path: str | os.PathLike, *,
                           captions: Sequence[str] | None = None, columns: int = 4, max_items: int = 32,
                           scale: int = 2) -> Path:
    """PNG grid: each cell holds ``base | aligned`` for one (caption, seed), ``columns`` cells per row.

    With ``captions``, each cell is labelled with its caption (shortened) under the pair.
    """
    n = min(len(base_images), len(aligned_images), max_items)
    if n == 0:
        raise ValueError("save_side_by_side_grid: no images")
    h, w = base_images.shape[1] * scale, base_images.shape[2] * scale
    label_h = 12 if captions is not None else 0
    gap = 4
    cell_w, cell_h = 2 * w + gap, h + label_h
    rows = (n + columns - 1) // columns
    canvas = Image.new("RGB", (columns * (cell_w + 2 * gap), rows * (cell_h + gap) + 14), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 1), "left: base | right: aligned", fill=(0, 0, 0))
    for i in range(n):
        r, c = divmod(i, columns)
        x0, y0 = c * (cell_w + 2 * gap), 14 + r * (cell_h + gap)
        for j, im in enumerate((base_images[i], aligned_images[i])):
            canvas.paste(Image.fromarray(im).resize((w, h), Image.NEAREST), (x0 + j * (w + gap), y0))
        if captions is not None:
            text = captions[i][2:] if captions[i].startswith("a ") else captions[i]
            draw.text((x0, y0 + h), text[:2 * w // 6], fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
