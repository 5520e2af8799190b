"""Issue 27: at step 0 of full fine-tuning the frozen reference is the same computation as the policy in every
precision mode (the copy keeps the policy's dtype and runs under the same autocast), so the first DPO loss is
exactly log 2. Before, the copy was cast to the bf16/fp16 compute dtype: sd15_dpo_full's first loss was 0.7273 /
0.8437 without autocast, and sd35m_dpo_full's 0.6937 even with autocast."""

from __future__ import annotations

import math

import pytest
import torch

pytestmark = pytest.mark.slow

LOG2_FLOAT32 = float(torch.tensor(math.log(2), dtype=torch.float32))
"""-log sigmoid(0) as the loss is computed (float32)."""
MODES = [(precision, autocast) for precision in ("no", "bf16", "fp16") for autocast in ("true", "false")]


@pytest.mark.parametrize(("config", "kind"), [("sd15_dpo_full.yaml", "sd15"), ("sd35m_dpo_full.yaml", "sd3")])
@pytest.mark.parametrize(("precision", "autocast"), MODES)
def test_full_fine_tuning_first_step_loss_is_exactly_log2(run_recipe, tiny_model_dirs, data_dirs, config, kind,
                                                          precision, autocast):
    summary = run_recipe(config, tiny_model_dirs[kind], data_dirs["pairs"], "train.max_steps=1",
                         f"train.mixed_precision={precision}", f"train.autocast={autocast}", "export.enabled=false",
                         "train.checkpoint_at_end=false", "model.gradient_checkpointing=false")
    assert summary["setup"]["mode"] == "full" and summary["setup"]["reference"] == "frozen_copy"
    assert summary["history"][0]["loss"] == LOG2_FLOAT32, (precision, autocast, summary["history"][0]["loss"])
