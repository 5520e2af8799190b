"""Random horizontal flips of preference images (``data.random_flip`` / ``data.flip_mode``).

=========  ========================================================================================================
mode       what flips
=========  ========================================================================================================
per_image  every image draws its own flip (p = 0.5): the official DiffusionDPO, SmPO, InPO and DCPO trainers apply
           ``transforms.RandomHorizontalFlip()`` inside the per-image ``train_transforms`` (e.g. ``JaydenLyh/InPO``
           @ a9cfc4d ``train.py`` l.699-707, applied to each image of ``jpg_0`` and ``jpg_1`` at l.726; on unless ``--no_hflip``)
pair       one draw per item, shared by its images (the diffusers SDXL DPO script concatenates the pair before the
           transform, so both get identical geometry)
=========  ========================================================================================================

With cached latents (``data.cache: true``) both orientations of every image are encoded and stored (the flipped one
under ``<key>#hflip``); a flipped VAE latent is not the latent of the flipped image, so latents are never flipped.
Every example then picks each image's orientation with the same draws as the uncached path.
"""

from __future__ import annotations

import torch

FLIP_MODES = ("per_image", "pair")
FLIP_SUFFIX = "#hflip"


def flipped_key(key: str) -> str:
    """Cache key of the horizontally flipped version of image ``key``."""
    return key + FLIP_SUFFIX


def draw_flips(n: int, enabled: bool, mode: str) -> list[bool]:
    """Flip decisions for the ``n`` images of one item (global torch RNG, one draw per image or per item)."""
    if mode not in FLIP_MODES:
        raise ValueError(f"config key 'data.flip_mode': '{mode}' ({', '.join(FLIP_MODES)})")
    if not enabled:
        return [False] * n
    if mode == "pair":
        return [bool(torch.rand(()) < 0.5)] * n
    return [bool(v) for v in (torch.rand(n) < 0.5)]
