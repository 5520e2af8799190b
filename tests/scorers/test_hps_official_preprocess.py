"""The HPSv2 cards preprocess exactly as the official HPSv2 validation transform (``ToTensor`` first, then the
float tensor is resized), transcribed below from ``tgxs002/HPSv2`` @ 866735e ``hpsv2/src/open_clip/transform.py``
(``ResizeMaxSize.forward`` l.37-49; ``image_transform(is_train=False, resize_longest_max=True)`` l.141-157)."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import Compose, InterpolationMode, Normalize, ToTensor

import scorers
from mmalign.testing.tiny_scorers import TINY_OPEN_CLIP

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
SIZES = [(64, 48), (48, 64), (100, 37), (37, 100), (32, 32), (512, 512)]  # (width, height)


def _resize_max_size(img: torch.Tensor, max_size: int, fill: int = 0) -> torch.Tensor:
    """``ResizeMaxSize(max_size, interpolation=BICUBIC, fill=0).forward`` on a tensor (l.37-49)."""
    height, width = img.shape[1:]
    scale = max_size / float(max(height, width))
    if scale != 1.0:
        new_size = tuple(round(dim * scale) for dim in (height, width))
        img = TF.resize(img, new_size, InterpolationMode.BICUBIC)
        pad_h = max_size - new_size[0]
        pad_w = max_size - new_size[1]
        img = TF.pad(img, padding=[pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=fill)
    return img


def _official(size: int) -> Compose:
    return Compose([lambda im: im.convert("RGB"), ToTensor(), lambda x: _resize_max_size(x, size),
                    Normalize(mean=MEAN, std=STD)])


def _images(sizes, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


@pytest.fixture(scope="module")
def hps(hps_checkpoint):
    path, model = hps_checkpoint
    return scorers.load_scorer("hpsv2", checkpoint=path, arch=TINY_OPEN_CLIP), model


def _cosine(model, pixels: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        img = F.normalize(model.encode_image(pixels), dim=-1)
        txt = F.normalize(model.encode_text(open_clip.tokenize(prompts)), dim=-1)
    return (img * txt).sum(-1)


def test_hpsv2_scores_equal_the_official_tensor_transform(hps, hps_checkpoint):
    scorer, model = hps
    images = _images(SIZES)
    prompts = [f"prompt {i}" for i in range(len(images))]
    official_px = torch.stack([_official(32)(im) for im in images])
    reference = _cosine(model, official_px, prompts)
    from scorers.preprocess import pil_to_pixels

    torch.testing.assert_close(pil_to_pixels(images, scorer.card), official_px, rtol=0, atol=1e-6)
    ours = scorer.score(images, prompts, raw=True)
    assert (ours - reference).abs().max() <= 1e-6, (ours, reference)
    # the tensor path of the same card is the same transform: score_tensor(ToTensor(image)) == score(image)
    for im, prompt, ref in zip(images, prompts, reference):
        one = scorer.score_tensor(ToTensor()(im)[None], prompt, raw=True)
        assert abs(float(one) - float(ref)) <= 1e-6
    # the PIL resize (upstream open_clip, mmalign's earlier default) is measurably different on resized sizes
    pil = scorers.load_scorer("hpsv2", checkpoint=hps_checkpoint[0], arch=TINY_OPEN_CLIP, resize_on="pil")
    assert (pil.score(images, prompts, raw=True) - reference).abs().max() > 1e-5


def test_longest_side_already_the_size_is_padded_unlike_the_official(hps):
    """The official skips the pad when no resize is needed and hands the model a non-square image; we pad."""
    scorer, _ = hps
    image = _images([(20, 32)])[0]  # width 20, height 32 = image_size
    assert tuple(_official(32)(image).shape) == (3, 32, 20)
    from scorers.preprocess import pil_to_pixels

    padded = F.pad(ToTensor()(image), (6, 6, 0, 0), value=0.0)
    expected = TF.normalize(padded, MEAN, STD)[None]
    torch.testing.assert_close(pil_to_pixels([image], scorer.card), expected, rtol=0, atol=1e-6)
