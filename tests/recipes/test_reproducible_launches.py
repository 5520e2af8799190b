"""Issue 27: every family seeds before any random initialisation, so two identical launches give identical weights
whatever the process's random state was before (the VLM recipe added its LoRA before ``train()`` seeded: lora_A
differed by 0.35 between two launches), and a resumed VLM run ends on the uninterrupted run's weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from mmalign import checkpoint as ckpt
from mmalign.recipe_entry import run_recipe_file
from tests.helpers import REPO, SMALL_DIFFUSION_RUN

pytestmark = pytest.mark.slow

VLM_RUN = ("train.batch_size=2", "train.grad_accum=1", "train.mixed_precision='no'", "model.dtype=float32",
           "train.warmup_steps=0", "train.lr_scheduler=constant", "train.lr=1e-2", "train.progress_bar=false",
           "train.checkpoint_every=0", "train.checkpoint_at_end=true")
VIDEO_RUN = ("train.batch_size=2", "train.grad_accum=1", "train.mixed_precision='no'", "model.dtype=float32",
             "train.warmup_steps=0", "train.progress_bar=false", "train.checkpoint_every=0",
             "train.checkpoint_at_end=true", "data.max_length=512")


def _launch(family: str, config: str, out, overrides, rng_seed: int) -> dict[str, torch.Tensor]:
    """One launch with the process's torch RNG in state ``rng_seed`` before it; the trained weights it saved."""
    torch.manual_seed(rng_seed)
    summary = run_recipe_file(REPO / "recipes" / f"{family}.py",
                              ["--config", str(REPO / "recipes" / "configs" / config), f"output_dir={out}", *overrides])
    return load_file(str(ckpt.final_path(out, summary["steps"]) / ckpt.TRAINABLE_FILE))


def _assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)


def _cases(models, data):
    return {
        "diffusion": ("diffusion/sd15_dpo.yaml", [*SMALL_DIFFUSION_RUN, "train.max_steps=1", "export.enabled=false",
                                                  "train.checkpoint_at_end=true", f"model.pretrained={models['sd15']}",
                                                  f"data.path={data['diffusion:pairs']}"]),
        "vlm": ("vlm/qwen2vl_dpo.yaml", [*VLM_RUN, "train.max_steps=1", f"model.pretrained={models['vlm:qwen2vl']}",
                                         f"data.path={data['vlm:pairs']}"]),
        "video": ("video/qwen25vl_rrpo.yaml", [*VIDEO_RUN, "train.max_steps=1",
                                               f"model.pretrained={models['video:qwen25vl']}",
                                               f"data.path={data['video:rrpo']}"]),
    }


@pytest.mark.parametrize("family", ["diffusion", "vlm", "video"])
def test_two_identical_launches_give_identical_weights(family, models, data, tmp_path, fresh_accelerate):
    config, overrides = _cases(models, data)[family]
    first = _launch(family, config, tmp_path / "a", overrides, rng_seed=1)
    second = _launch(family, config, tmp_path / "b", overrides, rng_seed=2)
    _assert_identical(first, second)


def test_vlm_resume_equals_the_uninterrupted_run(models, data, tmp_path, fresh_accelerate):
    config, overrides = "vlm/qwen2vl_dpo.yaml", [*VLM_RUN, f"model.pretrained={models['vlm:qwen2vl']}",
                                                 f"data.path={data['vlm:pairs']}", "export.merge=false"]
    straight = _launch("vlm", config, tmp_path / "straight", [*overrides, "train.max_steps=4"], rng_seed=1)
    _launch("vlm", config, tmp_path / "resumed", [*overrides, "train.max_steps=2"], rng_seed=2)
    resumed = _launch("vlm", config, tmp_path / "resumed", [*overrides, "train.max_steps=4", "train.resume=latest"],
                      rng_seed=3)
    _assert_identical(straight, resumed)
    first_half = load_file(str(ckpt.final_path(tmp_path / "resumed", 2) / ckpt.TRAINABLE_FILE))
    assert max(float((straight[k] - first_half[k]).abs().max()) for k in straight) > 1e-4  # steps 3-4 moved it
