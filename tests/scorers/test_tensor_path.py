"""The differentiable path: gradients reach the pixels and scores track the PIL path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import scorers
from mmalign.testing.tiny_scorers import TINY_OPEN_CLIP


def _smooth_images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images (bicubic resampling of noise is unstable to compare; real images are smooth)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 6, 6, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def _to_pil(x: torch.Tensor) -> list[Image.Image]:
    arr = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arr]


@pytest.fixture(scope="module")
def hps_and_pick(hps_checkpoint, hf_clip_folder):
    return {"hpsv2": scorers.load_scorer("hpsv2", checkpoint=hps_checkpoint[0], arch=TINY_OPEN_CLIP),
            "pickscore": scorers.load_scorer("pickscore", checkpoint=hf_clip_folder[0])}


@pytest.mark.parametrize("scorer_name", ["hpsv2", "pickscore"])
@pytest.mark.parametrize("size", [(48, 40), (32, 32), (90, 120)])
def test_tensor_path_matches_pil_path(scorer_name, size, hps_and_pick):
    s = hps_and_pick[scorer_name]
    x = (_smooth_images(4, *size) * 255).round() / 255  # exactly representable as uint8
    prompts = ["a red circle", "a blue square", "a cat", "a dog"]
    pil = s.score(_to_pil(x), prompts, raw=True)
    ten = s.score_tensor(x, prompts, raw=True)
    assert ten.shape == (4,) and ten.dtype == torch.float32
    # PIL bicubic (uint8, antialiased) vs torch bicubic (float, antialias=True): close, not bit-equal
    assert (pil - ten.detach()).abs().max() < 2e-3, (pil, ten)


def test_gradients_flow_to_pixels(hps_and_pick, hf_clip_folder, aesthetic_checkpoint):
    x = _smooth_images(2, 40, 56).requires_grad_(True)
    for s in (
        hps_and_pick["hpsv2"],
        hps_and_pick["pickscore"],
        scorers.load_scorer("aesthetic", checkpoint=aesthetic_checkpoint[0],
                            backbone_checkpoint=str(hf_clip_folder[0])),
    ):
        x.grad = None
        reward = s.score_tensor(x, "a red circle on the left")
        reward.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        # one gradient-ascent step on the pixels raises the reward (the reward is usable for optimisation)
        with torch.no_grad():
            stepped = (x + 1e-3 * x.grad / x.grad.abs().max()).clamp(0, 1)
        assert (s.score_tensor(stepped, "a red circle on the left") - reward.detach()).sum() > 0
        assert all(not p.requires_grad for p in s.backbone.module.parameters())  # scorer stays frozen


def test_tensor_path_rejects_bad_shapes(hps_and_pick):
    s = hps_and_pick["hpsv2"]
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        s.score_tensor(torch.rand(2, 4, 32, 32), "a cat")
    with pytest.raises(ValueError, match="float"):
        s.score_tensor(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "a cat")
