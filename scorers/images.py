"""Turn user image inputs into RGB PIL images, with clear errors for inputs that cannot be scored.

Accepted: ``PIL.Image`` (any mode; converted with ``.convert("RGB")`` as the official code does — RGBA drops
alpha, L/LA/P/CMYK become RGB), file paths, uint8 arrays/tensors ``[H,W]``, ``[H,W,C]`` (C in 1, 3, 4) or
``[C,H,W]``, float arrays/tensors in [0, 1] of the same shapes (quantised with ``round(x * 255)``), and batches
``[B,C,H,W]`` of either. Float values outside [0, 1] are rejected rather than silently clipped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

_TOL = 1e-4


def _array_to_pil(arr: np.ndarray, where: str, channels_first: bool = False) -> Image.Image:
    """``channels_first``: torch convention (a 3-d tensor is [C,H,W]); numpy arrays are [H,W,C] unless only
    the first axis can be channels."""
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and (channels_first or arr.shape[-1] not in (1, 3, 4)):
        arr = np.transpose(arr, (1, 2, 0))  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"{where}: expected an image of shape [H,W], [H,W,C] or [C,H,W] with C in 1/3/4, "
                         f"got {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{where}: empty image of shape {tuple(arr.shape)}")
    if arr.dtype == np.uint8:
        data = arr
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError(f"{where}: float image contains NaN or inf")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -_TOL or hi > 1 + _TOL:
            raise ValueError(f"{where}: float images must be in [0, 1], got values in [{lo:.3f}, {hi:.3f}] "
                             "(pass uint8 for 0-255 data)")
        data = np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise ValueError(f"{where}: unsupported image dtype {arr.dtype}; use uint8 or float in [0, 1]")
    return Image.fromarray(np.ascontiguousarray(data)).convert("RGB")


def _one_to_pil(image: Any, where: str) -> Image.Image:
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"{where}: empty image")
        return image.convert("RGB")
    if isinstance(image, str | os.PathLike):
        if not os.path.isfile(image):
            raise FileNotFoundError(f"{where}: image file not found: {image}")
        try:
            with Image.open(image) as img:
                return img.convert("RGB")
        except (OSError, Image.DecompressionBombError) as exc:  # truncated, not an image, too large
            raise ValueError(f"{where}: cannot read image {image}: {exc}") from None
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.dtype == torch.bfloat16 or image.dtype == torch.float16:
            image = image.float()
        return _array_to_pil(image.numpy(), where, channels_first=True)
    if isinstance(image, np.ndarray):
        return _array_to_pil(image, where)
    raise ValueError(f"{where}: unsupported image type {type(image).__name__}")


def to_pil_list(images: Any) -> list[Image.Image]:
    """A list of RGB PIL images from one image, a list of images, or a ``[B,C,H,W]`` batch."""
    if isinstance(images, torch.Tensor | np.ndarray) and images.ndim == 4:
        return [_one_to_pil(images[i], f"image {i}") for i in range(images.shape[0])]
    if isinstance(images, torch.Tensor | np.ndarray | Image.Image | str | os.PathLike):
        return [_one_to_pil(images, "image 0")]
    if isinstance(images, Sequence):
        return [_one_to_pil(img, f"image {i}") for i, img in enumerate(images)]
    raise ValueError(f"unsupported images argument of type {type(images).__name__}")


def broadcast_prompts(prompts: str | Sequence[str] | None, n: int) -> list[str]:
    """``prompts`` as a list of length ``n``: a string is repeated; a list must have length ``n``."""
    if prompts is None:
        raise ValueError("this scorer needs prompts")
    if isinstance(prompts, str):
        return [prompts] * n
    prompts = list(prompts)
    if len(prompts) != n:
        raise ValueError(f"got {n} images but {len(prompts)} prompts; pass one prompt per image or a single string")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise ValueError(f"prompt {i} is {type(p).__name__}, not str")
    return prompts
