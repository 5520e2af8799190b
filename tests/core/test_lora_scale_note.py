"""Issue 27: ``lora.alpha`` follows peft's rule (its own setting, not tied to the rank), so a command-line
``lora.rank`` that changes the scale alpha/rank says so and names the alpha that keeps it; qwen25vl_rrpo (rank 128,
alpha 256: scale 2) with ``lora.rank=8`` trained at scale 32 without a word."""

from __future__ import annotations

import pytest

from mmalign.config import load_config
from mmalign.diffusion.config import DiffusionRecipeConfig
from mmalign.lora_config import LoraConfig, rank_override_note
from mmalign.mllm.video.config import VideoRecipeConfig
from mmalign.mllm.vlm.config import VLMRecipeConfig
from tests.helpers import REPO

CONFIGS = REPO / "recipes" / "configs"


def test_a_rank_override_that_changes_the_scale_says_so(capsys):
    cfg = load_config(VideoRecipeConfig, CONFIGS / "video" / "qwen25vl_rrpo.yaml", ["lora.rank=8"])
    assert (cfg.lora.rank, cfg.lora.alpha) == (8, 256)  # peft's rule: alpha stays what the config says
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["NOTE: lora.rank=8 (the config says 128) keeps lora.alpha=256, so the LoRA scale alpha/rank changes "
                   "from 2 to 32 (peft's rule: alpha does not follow the rank); add lora.alpha=16 to keep the scale 2"]


@pytest.mark.parametrize(("schema", "config", "overrides"), [
    (VideoRecipeConfig, "video/qwen25vl_rrpo.yaml", ["lora.rank=8", "lora.alpha=16"]),  # both given: as asked
    (VideoRecipeConfig, "video/qwen25vl_rrpo.yaml", ["lora.alpha=16"]),  # no rank override
    (VLMRecipeConfig, "vlm/qwen2vl_dpo.yaml", ["lora.rank=0"]),  # full fine-tuning: no LoRA scale
    (VLMRecipeConfig, "vlm/qwen2vl_dpo.yaml", ["lora.rank=16"]),  # the config's own rank
    (DiffusionRecipeConfig, "diffusion/sd15_dpo.yaml", ["lora.rank=4"]),  # alpha null = rank: scale 1 at any rank
])
def test_no_note_when_the_scale_stays(schema, config, overrides, capsys):
    load_config(schema, CONFIGS / config, overrides)
    assert "LoRA scale" not in capsys.readouterr().err


def test_rank_override_note_scale_arithmetic():
    lora = LoraConfig(rank=32, alpha=32.0)
    assert "from 2 to 1" in rank_override_note(16, 32.0, lora, alpha_overridden=False)
    assert "add lora.alpha=64 to keep the scale 2" in rank_override_note(16, 32.0, lora, alpha_overridden=False)
    assert rank_override_note(16, 32.0, LoraConfig(rank=32, alpha=64.0), alpha_overridden=False) is None  # same scale
