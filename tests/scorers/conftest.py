"""Tiny random-weight checkpoints in the official layouts (HPSv2 .pt, HF CLIP folder, aesthetic .pth)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmalign.testing.tiny_scorers import tiny_hf_clip, tiny_open_clip


@pytest.fixture(scope="session")
def hps_checkpoint(tmp_path_factory):
    """(path, model): the HPSv2 layout — torch.save of {'epoch','name','state_dict'} with fp16 tensors."""
    model = tiny_open_clip()
    path = tmp_path_factory.mktemp("hps") / "HPS_tiny_compressed.pt"
    sd = {k: v.half() for k, v in model.state_dict().items()}
    torch.save({"epoch": 1, "name": "tiny", "state_dict": sd}, path)
    model.load_state_dict(sd)  # the reference uses the same (fp16-rounded) weights
    return path, model


@pytest.fixture(scope="session")
def hf_clip_folder(tmp_path_factory):
    """(folder, model): a CLIPModel.save_pretrained folder (config.json + model.safetensors)."""
    model = tiny_hf_clip()
    folder = tmp_path_factory.mktemp("pickscore")
    model.save_pretrained(folder)
    return folder, model


@pytest.fixture(scope="session")
def aesthetic_checkpoint(tmp_path_factory, hf_clip_folder):
    """(head path, head module): the LAION layout layers.{0,2,4,6,7}.* for the tiny 32-d backbone."""
    from scorers.heads import AestheticMLP

    torch.manual_seed(3)
    head = AestheticMLP(32).eval()
    path = tmp_path_factory.mktemp("aesthetic") / "tiny-linearMSE.pth"
    torch.save(head.state_dict(), path)
    return path, head


@pytest.fixture
def images() -> list[Image.Image]:
    return random_images()


def random_images(seed: int = 0) -> list[Image.Image]:
    """Images of assorted sizes and modes (odd crop gaps, portrait/landscape, grayscale, RGBA, 1x1)."""
    rng = np.random.default_rng(seed)
    sizes = [(48, 40), (37, 61), (32, 32), (100, 45), (33, 35)]
    imgs = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]
    imgs.append(Image.fromarray(rng.integers(0, 256, (30, 50), dtype=np.uint8), mode="L"))
    imgs.append(Image.fromarray(rng.integers(0, 256, (41, 29, 4), dtype=np.uint8), mode="RGBA"))
    imgs.append(Image.fromarray(rng.integers(0, 256, (1, 1, 3), dtype=np.uint8)))
    return imgs
