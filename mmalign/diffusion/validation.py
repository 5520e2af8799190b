"""Validation images: the current model's samples for fixed prompts and seeds, saved as one PNG grid per call.

The grid has one row per prompt and one column per image (``num_images`` seeds). The reference grid is rendered
once, before training (policy == base model then), as ``validation/reference.png``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from PIL import Image

from mmalign.diffusion.sampling import generate


def image_grid(images: list[Image.Image], rows: int) -> Image.Image:
    cols = math.ceil(len(images) / rows)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h), "white")
    for i, image in enumerate(images):
        grid.paste(image, ((i % cols) * w, (i // cols) * h))
    return grid


@torch.no_grad()
def render_grid(pipe, prompts: list[str], out_path: str | os.PathLike, *, size: int, steps: int, guidance: float,
                seed: int, device: torch.device | str, num_images: int = 1,
                autocast: Callable[[], object] = nullcontext, scorer=None) -> dict[str, object]:
    """Sample ``num_images`` images per prompt with fixed seeds and save the grid PNG. Components meet in explicit
    dtypes (:func:`mmalign.diffusion.sampling.generate`); ``autocast`` (e.g. ``accelerator.autocast``) is only a
    speed-up. With a ``scorer``
    (:func:`scorers.load_scorer`) the result holds the images' mean score against their prompts."""
    pipe.set_progress_bar_config(disable=True)
    images = []
    for prompt in prompts:
        for j in range(num_images):
            generator = torch.Generator(device="cpu").manual_seed(seed + j)
            images += generate(pipe, prompt, height=size, width=size, num_inference_steps=steps,
                               guidance_scale=guidance, generator=generator, autocast=autocast)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    image_grid(images, rows=len(prompts)).save(out)
    result: dict[str, object] = {"grid": str(out)}
    if scorer is not None:
        texts = [p for p in prompts for _ in range(num_images)]
        result["score"] = float(scorer.score(images, texts).mean())
    return result


def load_validation_scorer(val, device: torch.device | str):
    """The scorer named by ``validation.scorer`` (None when unset or without validation prompts)."""
    if not val.scorer or not val.prompts:
        return None
    from scorers import load_scorer

    return load_scorer(val.scorer, val.scorer_checkpoint, device=device)
