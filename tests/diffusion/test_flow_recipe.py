"""Every flow-capable method runs end to end through the real recipe on tiny SD3 / FLUX pipelines: moves the
transformer's parameters, starts at its closed-form initial loss, exports (LoRA → ``load_lora_weights``; full
fine-tuning → a complete pipeline folder), and runs bf16 without autocast (components in explicit dtypes)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.helpers import LOG2, max_change, switched_config

pytestmark = pytest.mark.slow
BF16_NO_AUTOCAST = ("train.mixed_precision=bf16", "train.autocast=false")


def _lora_moved(out: Path) -> float:
    weights = load_file(str(out / "pytorch_lora_weights.safetensors"))
    ups = [v for k, v in weights.items() if "lora_B" in k]
    assert ups and all(k.startswith("transformer.") for k in weights), sorted(weights)[:5]
    return max(float(v.abs().max()) for v in ups)


def _check(summary: dict, family: str) -> None:
    assert summary["steps"] == 2 and summary["family"] == family and summary["prediction_type"] == "flow"
    assert all(math.isfinite(h["loss"]) for h in summary["history"])


def _grid_ok(path: Path) -> None:
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    assert pixels.std() > 1.0


@pytest.mark.parametrize("config,kind", [("sd35m_dpo.yaml", "sd3"), ("flux_dpo.yaml", "flux")])
def test_dpo_lora_bf16_without_autocast(run_recipe, tiny_model_dirs, data_dirs, tmp_path, config, kind):
    summary = run_recipe(config, tiny_model_dirs[kind], data_dirs["pairs"], *BF16_NO_AUTOCAST,
                         "validation.prompts=[a red square]", "validation.num_inference_steps=2")
    out = tmp_path / "out"
    _check(summary, kind)
    assert summary["setup"]["weight_dtype"] == "bfloat16" and summary["setup"]["reference"] == "lora"
    assert summary["history"][0]["loss"] == pytest.approx(LOG2, abs=1e-6)
    assert _lora_moved(out) > 0
    _grid_ok(out / "validation" / "reference.png")
    _grid_ok(out / "validation" / "step_000002.png")

    from mmalign.testing.tiny_diffusion import load_pipeline

    pipe = load_pipeline(tiny_model_dirs[kind])
    g = torch.Generator().manual_seed(0)
    images = []
    for lora in (False, True):
        if lora:
            pipe.load_lora_weights(str(out))
        images.append(pipe("a red square", height=32, width=32, num_inference_steps=2, output_type="np",
                           generator=torch.Generator().manual_seed(0), max_sequence_length=32).images)
    del g
    assert np.abs(images[0] - images[1]).max() > 0  # the exported adapter changes the samples


@pytest.mark.parametrize("config,kind,method,data,extra", [
    ("sd35m_dpo.yaml", "sd3", "sft", "pairs", ()),
    ("flux_mapo.yaml", "flux", "mapo", "pairs", ()),
    ("sd35m_dpo.yaml", "sd3", "mapo", "pairs", ("method.mapo.beta=0.1",)),
    ("sd35m_dpo.yaml", "sd3", "dcpo", "dual", ()),
    ("sd3m_rankdpo.yaml", "sd3", "rankdpo", "ranked", ()),
    ("sd35m_dpo.yaml", "sd3", "kto", "unpaired", ("method.kto.beta=100",)),
    ("flux_dpo.yaml", "flux", "kto", "unpaired", ()),
    ("flux_dpo.yaml", "flux", "rankdpo", "ranked", ()),
])
def test_methods_move_the_transformer(run_recipe, tiny_model_dirs, data_dirs, tmp_path, config, kind, method, data,
                                      extra):
    """Each method from a YAML written for another one: the YAML switched to it (``switched_config``: a key the
    method does not read, such as the DPO temperature for sft / mapo / kto, is an error otherwise)."""
    summary = run_recipe(switched_config(config, method, tmp_path / "configs"), tiny_model_dirs[kind],
                         data_dirs[data], *extra)
    _check(summary, kind)
    assert summary["method"] == method
    first = summary["history"][0]["loss"]
    if method in ("dpo", "dcpo"):
        assert first == pytest.approx(LOG2, abs=1e-6)
    elif method == "kto":
        assert first == pytest.approx(0.5, abs=1e-6)  # 1 - sigmoid(0) at policy == reference
    elif method == "rankdpo":
        inv = [1 / math.log2(1 + r) for r in (1, 2, 3)]
        gains = [2**1.0, 2**0.5, 2**0.0]
        pairs = sum(abs(gains[i] - gains[j]) * abs(inv[i] - inv[j]) for i in range(3) for j in range(i + 1, 3))
        assert first == pytest.approx(pairs * LOG2, rel=1e-5)
    assert _lora_moved(tmp_path / "out") > 0


def test_uncached_sd3_empty_prompts(run_recipe, tiny_model_dirs, data_dirs, tmp_path):
    """Pixels and prompts encoded in the step (shift/scale latents, CLIP+T5 prompts), empty-prompt dropout."""
    summary = run_recipe("sd35m_dpo.yaml", tiny_model_dirs["sd3"], data_dirs["pairs"], "data.cache=false",
                         "method.empty_prompt_prob=0.5", *BF16_NO_AUTOCAST)
    _check(summary, "sd3")
    assert summary["data"]["cache"] is False
    assert summary["history"][0]["loss"] == pytest.approx(LOG2, abs=1e-6)


def test_full_finetune_sd3_exports_pipeline(run_recipe, tiny_model_dirs, data_dirs, tmp_path):
    summary = run_recipe("sd35m_dpo_full.yaml", tiny_model_dirs["sd3"], data_dirs["pairs"],
                         "train.checkpoint_at_end=true")  # fp32: reference copy == policy bit for bit
    out = tmp_path / "out"
    _check(summary, "sd3")
    assert summary["setup"]["mode"] == "full" and summary["setup"]["reference"] == "frozen_copy"
    assert summary["history"][0]["loss"] == pytest.approx(LOG2, abs=1e-6)
    from diffusers import StableDiffusion3Pipeline

    tuned = StableDiffusion3Pipeline.from_pretrained(str(out))
    base = StableDiffusion3Pipeline.from_pretrained(tiny_model_dirs["sd3"])
    assert max_change(tuned.transformer, base.transformer) > 0
    assert max_change(tuned.text_encoder_3, base.text_encoder_3) == 0  # only the transformer is trained
    assert tuned.transformer.dtype == base.transformer.dtype  # exported in the checkpoint's own dtype

    from mmalign.cli import main as cli

    assert cli(["export", str(out / "checkpoints" / "checkpoint-2"), "--out", str(tmp_path / "from_ckpt")]) == 0
    from_ckpt = StableDiffusion3Pipeline.from_pretrained(str(tmp_path / "from_ckpt"))
    assert max(float((a - b).abs().max()) for a, b in zip(from_ckpt.transformer.parameters(),
                                                          base.transformer.parameters())) > 0
