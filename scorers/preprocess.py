"""Image preprocessing of the CLIP-family scorers: a PIL path (matches the originals) and a torch path
(differentiable, for rewards). Spec: shared/spec/scorers.md §1, §2 (HPSv2), §3 (PickScore), §5, §6.

* ``shortest`` (OpenAI / HF ``CLIPImageProcessor``): resize so the shorter side is ``S`` keeping the aspect ratio
  (the longer side is ``int(S * long / short)``, as torchvision and transformers compute it), bicubic; centre
  crop ``S x S`` with offset ``(size - S) // 2`` (transformers) or ``int(round((size - S) / 2))``
  (torchvision ``CenterCrop``, used by OpenAI clip); scale to [0, 1]; normalise.
* ``longest`` (HPSv2, upstream open_clip ``image_resize_mode='longest'``): ``ratio = max(h / S, w / S)``, each
  side ``round(side / ratio)``, bicubic; zero-pad centred to ``S x S`` (left/top pad ``gap // 2``); normalise.

Where the resize runs is the card's ``resize_on``:

* ``pil``: the PIL image is resized (PIL bicubic, antialiased, clamped to 0..255) — OpenAI clip, HF processors,
  upstream open_clip.
* ``tensor`` (the HPSv2 cards): the official HPSv2 validation transform (``tgxs002/HPSv2`` @ 866735e,
  ``hpsv2/src/open_clip/transform.py`` l.141-157 with ``resize_longest_max=True`` from ``factory.py`` l.368-375):
  ``ToTensor`` (uint8 / 255) first, then ``ResizeMaxSize`` (l.26-49): ``scale = S / max(h, w)``, each side
  ``round(side * scale)``, torchvision bicubic on the float tensor (= ``F.interpolate(bicubic, antialias=True)``,
  torchvision >= 0.17 default, **no clamp**), zero pad ``[w//2, h//2, w - w//2, h - h//2]``; normalise. One
  deliberate difference: the official skips the pad when no resize is needed (longest side already ``S``), which
  leaves a non-square image the model cannot take; we always pad.

``score_tensor`` (the torch path, differentiable) does the same geometry with ``F.interpolate(mode="bicubic",
antialias=True)``; for ``resize_on: pil`` it clamps to [0, 1] like PIL and matches the PIL path to about 1e-2 in
normalised units, for ``resize_on: tensor`` it is the official transform itself (``score`` of a PIL image and
``score_tensor`` of its ``ToTensor`` agree to float rounding).
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
    if card.resize == "longest" and card.resize_on == "tensor":  # HPSv2 ResizeMaxSize (l.42-44)
        scale = size / float(max(height, width))
        return max(1, round(height * scale)), max(1, round(width * scale))
    if card.resize == "longest":  # upstream open_clip ResizeKeepRatio
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
    """RGB PIL images -> normalised ``[B, 3, S, S]`` float32 pixels (the scorer's official pipeline; for
    ``resize_on: tensor`` the resize runs on each image's float tensor, see the module docstring).

    ``workers > 1`` resizes in a thread pool (PIL releases the GIL while resampling); results are identical.
    """
    if card.resize_on == "tensor":
        return _normalize(torch.cat([_geometry(_to_tensor(img), card, clamp=False) for img in images]), card)
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
    return _normalize(_geometry(images, card, clamp=card.resize_on != "tensor"), card)


def _to_tensor(img: Image.Image) -> torch.Tensor:
    """torchvision ``ToTensor`` of an RGB PIL image: ``[1, 3, H, W]`` float32 = uint8 / 255."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)[None].float().div(255)


def _geometry(x: torch.Tensor, card: ScorerCard, *, clamp: bool) -> torch.Tensor:
    """Resize (bicubic, antialias), optionally clamp to [0, 1], then zero-pad (longest) or centre-crop (shortest)."""
    size = card.image_size
    height, width = x.shape[-2:]
    new_h, new_w = resized_size(height, width, card)
    if (new_h, new_w) != (height, width):
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    if clamp:
        x = x.clamp(0.0, 1.0)
    if card.resize == "longest":
        pad_h, pad_w = max(size - new_h, 0), max(size - new_w, 0)
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)
        x = x[..., :size, :size]
    else:
        top, left = _crop_offset(new_h, size, card), _crop_offset(new_w, size, card)
        x = x[..., top : top + size, left : left + size]
    return x
