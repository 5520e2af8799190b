"""Sampling from a (toy) ``StableDiffusionPipeline`` with one seed per image.

Each image gets its own ``torch.Generator`` seeded with its seed, so an image depends only on (caption, seed) and
the pipeline's weights, not on how the batch was cut. The implementation is the evaluation's
(:func:`mmalign.evaluation.generation.sample_images`); this module holds the toy world's sampler defaults.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmalign.evaluation.generation import sample_images as _sample_images

DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 3.0


def sample_images(pipe, captions: Sequence[str], seeds: Sequence[int], *, num_inference_steps: int = DEFAULT_STEPS,
                  guidance_scale: float = DEFAULT_GUIDANCE, batch_size: int = 64, height: int | None = None,
                  width: int | None = None, desc: str | None = None) -> np.ndarray:
    """Generate one image per (caption, seed): uint8 ``(N, H, W, 3)``; ``desc``: show a progress bar (images)."""
    return _sample_images(pipe, captions, seeds, num_inference_steps=num_inference_steps,
                          guidance_scale=guidance_scale, batch_size=batch_size, height=height, width=width, desc=desc)
