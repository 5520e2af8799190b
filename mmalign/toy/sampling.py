"""Sampling from a (toy) ``StableDiffusionPipeline`` with one seed per image.

Each image gets its own ``torch.Generator`` seeded with its seed, so an image depends only on (caption, seed) and
the pipeline's weights, not on how the batch was cut.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mmalign.diffusion.sampling import generate

DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 3.0


@torch.no_grad()
def sample_images(pipe, captions: Sequence[str], seeds: Sequence[int], *, num_inference_steps: int = DEFAULT_STEPS,
                  guidance_scale: float = DEFAULT_GUIDANCE, batch_size: int = 64, height: int | None = None,
                  width: int | None = None, desc: str | None = None) -> np.ndarray:
    """Generate one image per (caption, seed): uint8 ``(N, H, W, 3)``; ``desc``: show a progress bar (images)."""
    from tqdm.auto import tqdm

    if len(captions) != len(seeds):
        raise ValueError(f"sample_images: {len(captions)} captions but {len(seeds)} seeds")
    out = []
    bar = tqdm(total=len(captions), desc=desc, unit="img", disable=desc is None)
    for i in range(0, len(captions), batch_size):
        caps = list(captions[i:i + batch_size])
        gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds[i:i + batch_size]]
        shape_kw = {k: v for k, v in (("height", height), ("width", width)) if v is not None}
        images = generate(pipe, caps, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                          generator=gens, output_type="np", **shape_kw)
        out.append(np.clip(np.rint(np.asarray(images) * 255.0), 0, 255).astype(np.uint8))
        bar.update(len(caps))
    bar.close()
    return np.concatenate(out) if out else np.zeros((0, 64, 64, 3), np.uint8)
