"""Image preprocessing of the CLIP-family scorers: a PIL path (matches the originals) and a torch path
(differentiable, for rewards). Spec: shared/spec/scorers.md §1, §2 (HPSv2), §3 (PickScore), §5, §6.

* ``shortest`` (OpenAI / HF ``CLIPImageProcessor``): resize so the shorter side is ``S`` keeping the aspect ratio
  (the longer side is ``int(S * long / short)``, as torchvision and transformers compute it), bicubic; centre
  crop ``S x S`` with offset ``(size - S) // 2`` (transformers) or ``int(round((size - S) / 2))``
  (torchvision ``CenterCrop``, used by OpenAI clip); scale to [0, 1]; normalise.
* ``longest`` (HPSv2, upstream open_clip ``image_resize_mode='longest'``): ``ratio = max(h / S, w / S)``, each
  side ``round(side / ratio)``, bicubic; zero-pad centred to ``S x S`` (left/top pad ``gap // 2``); normalise.
  The vendored HPSv2 transform resizes a float tensor instead of the PIL image and skips padding when the longer
  side is already ``S``; we follow upstream open_clip (always pad), as the spec recommends.

The torch path does the same geometry with ``F.interpolate(mode="bicubic", antialias=True)`` and clamps to
[0, 1] (PIL clamps to 0..255); it is differentiable and matches the PIL path to about 1e-2 in normalised units.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from scorers.cards import ScorerCard


def resized_size(height: int, width: int, card: ScorerCard) -> tuple[int, int]:
    """(new_height, new_width) before crop/pad."""
    size = card.image_size
    if card.resize == "longest":
        ratio = max(height / size, width / size)
        return max(1, round(height / ratio)), max(1, round(width / ratio))  # a 1000x1 strip keeps 1 pixel
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def _crop_offset(length: int, size: int, card: ScorerCard) -> int:
    gap = length - size
    if card.crop_offset == "round":
        return int(round(gap / 2.0))
    return gap // 2


def _normalize(pixels: torch.Tensor, card: ScorerCard) -> torch.Tensor:
    mean = torch.tensor(card.mean, dtype=pixels.dtype, device=pixels.device).view(-1, 3, 1, 1)
    std = torch.tensor(card.std, dtype=pixels.dtype, device=pixels.device).view(-1, 3, 1, 1)
    return (pixels - mean) / std


def _pil_one(img: Image.Image, card: ScorerCard, out: np.ndarray) -> None:
    """Resize + crop/pad one image into ``out`` ([S, S, 3] float32 in [0, 1], zero-initialised)."""
    size = card.image_size
    if img.mode != "RGB":
        img = img.convert("RGB")
    new_h, new_w = resized_size(img.height, img.width, card)
    img = img.resize((new_w, new_h), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if card.resize == "longest":
        top, left = max(size - new_h, 0) // 2, max(size - new_w, 0) // 2
        arr = arr[:size, :size]
        out[top : top + arr.shape[0], left : left + arr.shape[1]] = arr
    else:
        top, left = _crop_offset(new_h, size, card), _crop_offset(new_w, size, card)
        out[:] = arr[top : top + size, left : left + size]


def pil_to_pixels(images: list[Image.Image], card: ScorerCard, workers: int = 1) -> torch.Tensor:
    """RGB PIL images -> normalised ``[B, 3, S, S]`` float32 pixels (the scorer's official PIL pipeline).

    ``workers > 1`` resizes in a thread pool (PIL releases the GIL while resampling); results are identical.
    """
    size = card.image_size
    out = np.zeros((len(images), size, size, 3), dtype=np.float32)
    if workers > 1 and len(images) > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(images))) as pool:
            list(pool.map(lambda i: _pil_one(images[i], card, out[i]), range(len(images))))
    else:
        for i, img in enumerate(images):
            _pil_one(img, card, out[i])
    return _normalize(torch.from_numpy(out).permute(0, 3, 1, 2), card)


def tensor_to_pixels(images: torch.Tensor, card: ScorerCard) -> torch.Tensor:
    """Float ``[B, 3, H, W]`` in [0, 1] -> normalised ``[B, 3, S, S]``; differentiable (no PIL round trip)."""
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"score_tensor expects float pixels [B, 3, H, W], got shape {tuple(images.shape)}")
    if not torch.is_floating_point(images):
        raise ValueError(f"score_tensor expects float pixels in [0, 1], got dtype {images.dtype}")
    size = card.image_size
    height, width = images.shape[-2:]
    new_h, new_w = resized_size(height, width, card)
    x = images
    if (new_h, new_w) != (height, width):
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    x = x.clamp(0.0, 1.0)
    if card.resize == "longest":
        pad_h, pad_w = max(size - new_h, 0), max(size - new_w, 0)
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)
        x = x[..., :size, :size]
    else:
        top, left = _crop_offset(new_h, size, card), _crop_offset(new_w, size, card)
        x = x[..., top : top + size, left : left + size]
    return _normalize(x, card)
