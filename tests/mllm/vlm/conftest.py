"""Shared fixtures of the VLM tests: tiny random VLM folders (real classes, real processors, offline tokenizer)
and a small jsonl preference set with image files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mmalign.data.vlm_rows import VLMRow
from mmalign.testing.tiny_vlm import write_tiny_vlm
from tests.helpers import perturb_lora

COLORS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}



@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory):
    """``tiny_vlm(family) -> folder``: a saved tiny model + processor (built once per session per family)."""
    root = tmp_path_factory.mktemp("tiny_vlms")
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in cache:
            cache[family] = write_tiny_vlm(family, root / family)
        return cache[family]

    return get


def make_rows() -> list[VLMRow]:
    """Two conversational rows with different image sizes and completion lengths."""
    return [
        VLMRow("r0", [Image.new("RGB", (40, 30), COLORS["red"])], [{"role": "user", "content": "What is this?"}],
               [{"role": "assistant", "content": "a red square"}],
               [{"role": "assistant", "content": "a blue circle on the left"}]),
        VLMRow("r1", [Image.new("RGB", (28, 56), COLORS["blue"])],
               [{"role": "user", "content": "Describe the picture."}],
               [{"role": "assistant", "content": "blue"}], [{"role": "assistant", "content": "It is green."}]),
    ]


def write_pairs(folder: Path, n: int = 4) -> Path:
    """``pairs.jsonl`` + PNG files: images, retrieved_image, conversational prompt/chosen/rejected, rewards."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (name, rgb) in enumerate(list(COLORS.items())[:n]):
        Image.new("RGB", (32 + 8 * i, 32), rgb).save(folder / f"img{i}.png")
        Image.new("RGB", (32, 32), tuple(255 - c for c in rgb)).save(folder / f"ret{i}.png")
        rows.append({
            "id": f"row{i}", "images": [f"img{i}.png"], "retrieved_image": f"ret{i}.png",
            "prompt": [{"role": "user", "content": "What color is the shape?"}],
            "chosen": [{"role": "assistant", "content": f"It is {name}."}],
            "rejected": [{"role": "assistant", "content": "a purple circle on the left"}],
            "chosen_reward": 3.0 + i, "rejected_reward": 1.0,
        })
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def pairs_jsonl(tmp_path) -> Path:
    return write_pairs(tmp_path / "data")


@pytest.fixture
def vlm_rows() -> list[VLMRow]:
    return make_rows()


@pytest.fixture
def pairs_writer():
    """``pairs_writer(folder, n=4) -> path`` (see :func:`write_pairs`)."""
    return write_pairs


def lora_policy(folder, *, seed: int = 0, scale: float = 0.5):
    """Tiny model from ``folder`` with vision frozen and a LoRA adapter whose B matrices are random (so that
    policy != reference); returns ``(peft_model, processor)``."""
    from mmalign.lora_config import LoraConfig
    from mmalign.mllm.model import load_vlm, prepare_policy
    from mmalign.mllm.model_config import VLMModelConfig

    model, processor = load_vlm(VLMModelConfig(pretrained=str(folder)))
    policy, _ = prepare_policy(model, VLMModelConfig(pretrained=str(folder)), LoraConfig(rank=4, alpha=8),
                               needs_reference=True)
    perturb_lora(policy, scale=scale, seed=seed)
    return policy, processor


@pytest.fixture
def make_policy(tiny_vlm):
    """``make_policy(family) -> (peft model with random LoRA, processor)``."""
    return lambda family, **kw: lora_policy(tiny_vlm(family), **kw)
