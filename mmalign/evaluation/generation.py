"""One image per (prompt, seed), each from its own generator, on the one sampling path
(:func:`mmalign.diffusion.sampling.generate`), optionally saved to and resumed from a folder of PNGs.

The evaluation grid is caption-major: image ``k = prompt_index * len(seeds) + seed_index`` of prompt
``prompt_index`` starts from the noise of ``torch.Generator().manual_seed(image_seed(seed, prompt_index))``, so an
image depends only on (prompt index, seed), the model and the sampler settings — not on the batch it was drawn in,
nor on which process drew it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

SEED_STRIDE = 1_000_003


def image_seed(seed: int, caption_index: int) -> int:
    """The generator seed of one evaluation image: ``seed * SEED_STRIDE + caption_index``.

    Every (caption, sampling seed) starts from its own initial noise. Re-using one noise per seed for every caption
    (as the first toy evaluations did) correlates all images of a seed: a base model that mostly ignores its
    caption then draws near-identical images per seed and the "seed-to-seed" spread measures three noises, not the
    model (per-seed means 0.020 / 0.003 / 0.085 for the same base, 10 DDIM steps).
    """
    return int(seed) * SEED_STRIDE + int(caption_index)


@dataclass(frozen=True)
class Plan:
    """The (prompt, seed) grid of an evaluation, caption-major."""

    prompts: list[str]
    seeds: list[int]

    def __post_init__(self):
        if not self.prompts or not self.seeds:
            raise ValueError("an evaluation needs at least one prompt and one seed")

    def __len__(self) -> int:
        return len(self.prompts) * len(self.seeds)

    def prompt_index(self, k: int) -> int:
        return k // len(self.seeds)

    def prompt(self, k: int) -> str:
        return self.prompts[self.prompt_index(k)]

    def seed(self, k: int) -> int:
        return self.seeds[k % len(self.seeds)]

    def generator_seed(self, k: int) -> int:
        return image_seed(self.seed(k), self.prompt_index(k))

    def groups(self) -> list[int]:
        """The prompt index of every image (the bootstrap's resampling unit)."""
        return [self.prompt_index(k) for k in range(len(self))]


@torch.no_grad()
def sample_images(pipe, captions: Sequence[str], seeds: Sequence[int], *, num_inference_steps: int,
                  guidance_scale: float, batch_size: int = 64, height: int | None = None, width: int | None = None,
                  desc: str | None = None, autocast=None, **pipe_kwargs: Any) -> np.ndarray:
    """Generate one image per (caption, generator seed): uint8 ``(N, H, W, 3)``; ``desc``: a progress bar label."""
    from contextlib import nullcontext

    from tqdm.auto import tqdm

    from mmalign.diffusion.sampling import generate

    if len(captions) != len(seeds):
        raise ValueError(f"sample_images: {len(captions)} captions but {len(seeds)} seeds")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    out = []
    bar = tqdm(total=len(captions), desc=desc, unit="img", disable=desc is None)
    shape_kw = {k: v for k, v in (("height", height), ("width", width)) if v is not None}
    for i in range(0, len(captions), batch_size):
        caps = list(captions[i:i + batch_size])
        gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds[i:i + batch_size]]
        images = generate(pipe, caps, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                          generator=gens, output_type="np", autocast=autocast or nullcontext, **shape_kw,
                          **pipe_kwargs)
        out.append(np.clip(np.rint(np.asarray(images) * 255.0), 0, 255).astype(np.uint8))
        bar.update(len(caps))
    bar.close()
    return np.concatenate(out) if out else np.zeros((0, 64, 64, 3), np.uint8)


def sample_plan(pipe, plan: Plan, indices: Sequence[int] | None = None, **kwargs: Any) -> np.ndarray:
    """:func:`sample_images` of the plan's images ``indices`` (all by default), in that order."""
    idx = list(range(len(plan))) if indices is None else list(indices)
    return sample_images(pipe, [plan.prompt(k) for k in idx], [plan.generator_seed(k) for k in idx], **kwargs)


class ImageStore:
    """Images of one model as ``<folder>/<k:05d>.png`` (lossless, so a reloaded image equals the generated one);
    written atomically (temporary name + rename), so an interrupted run never leaves a half-written image."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def path(self, k: int) -> Path:
        return self.folder / f"{k:05d}.png"

    def missing(self, indices: Sequence[int]) -> list[int]:
        return [k for k in indices if not self.path(k).is_file()]

    def save(self, k: int, image: np.ndarray) -> Path:
        from PIL import Image

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(k)
        tmp = path.with_name(f".{path.name}.tmp")
        Image.fromarray(image).save(tmp, format="PNG")
        os.replace(tmp, path)
        return path

    def load(self, indices: Sequence[int]) -> np.ndarray:
        from PIL import Image

        return np.stack([np.asarray(Image.open(self.path(k)).convert("RGB")) for k in indices])


def generate_into(store: ImageStore, pipe_factory, plan: Plan, indices: Sequence[int], *, batch_size: int,
                  desc: str | None = None, **kwargs: Any) -> int:
    """Generate the images of ``indices`` that ``store`` lacks, ``batch_size`` at a time, saving each batch as it
    is drawn (a kill loses at most one batch); returns how many were generated. ``pipe_factory()`` is called only
    when something is missing (a complete folder loads no model)."""
    from tqdm.auto import tqdm

    todo = store.missing(indices)
    if not todo:
        return 0
    pipe = pipe_factory()
    bar = tqdm(total=len(todo), desc=desc, unit="img", disable=desc is None)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        images = sample_plan(pipe, plan, chunk, batch_size=batch_size, **kwargs)
        for k, image in zip(chunk, images):
            store.save(k, image)
        bar.update(len(chunk))
    bar.close()
    return len(todo)
