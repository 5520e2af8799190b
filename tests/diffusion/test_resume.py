"""A diffusion run resumed from its step-2 checkpoint ends with exactly the LoRA of an uninterrupted 4-step run
(noise, timesteps and posterior samples come from the RNG states the checkpoint restores)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


def test_resume_equals_uninterrupted(run_recipe, tiny_model_dirs, data_dirs, tmp_path):
    common = ("train.batch_size=1", "method.empty_prompt_prob=0.5")
    run_recipe("sd15_dpo.yaml", tiny_model_dirs["sd15"], data_dirs["pairs"], "train.max_steps=4", *common,
               out="full")
    run_recipe("sd15_dpo.yaml", tiny_model_dirs["sd15"], data_dirs["pairs"], "train.max_steps=2",
               "train.checkpoint_every=2", "export.enabled=false", *common, out="resumed")
    summary = run_recipe("sd15_dpo.yaml", tiny_model_dirs["sd15"], data_dirs["pairs"], "train.max_steps=4",
                         "train.resume=latest", *common, out="resumed")
    assert summary["steps"] == 4
    full = load_file(str(tmp_path / "full" / "pytorch_lora_weights.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "pytorch_lora_weights.safetensors"))
    assert full.keys() == resumed.keys()
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=0)
