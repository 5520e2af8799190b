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
                autocast: Callable[[], object] = nullcontext) -> Path:
    """Sample ``num_images`` images per prompt with fixed seeds and save the grid PNG. ``autocast`` (e.g.
    ``accelerator.autocast``) lets a bf16/fp16 UNet feed a float32 VAE."""
    pipe.set_progress_bar_config(disable=True)
    images = []
    for prompt in prompts:
        for j in range(num_images):
            generator = torch.Generator(device="cpu").manual_seed(seed + j)
            with autocast():
                images += pipe(prompt, height=size, width=size, num_inference_steps=steps, guidance_scale=guidance,
                               generator=generator, output_type="pil").images
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    image_grid(images, rows=len(prompts)).save(out)
    return out
