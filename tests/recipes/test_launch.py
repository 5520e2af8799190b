"""Launched as the README says: ``accelerate launch`` subprocesses, and where the reference model lives."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

ACCELERATE = str(Path(sys.executable).with_name("accelerate"))


@pytest.mark.slow
def test_sd15_dpo_fp16_as_shipped_trains_and_writes_validation_grids(tmp_path):
    """Issue 14: with fp16 (as shipped) on CPU accelerate disables autocast; the reference grid crashed in
    vae.decode ("Input type (c10::Half) and bias type (float)") before the first step."""
    out = tmp_path / "run"
    cmd = [ACCELERATE, "launch", "--num_processes", "1", "--num_machines", "1", "--dynamo_backend", "no",
           "recipes/diffusion.py", "--config", "recipes/configs/diffusion/sd15_dpo.yaml",
           "model.pretrained=tiny:sd15", "data.path=tiny:pairs", f"output_dir={out}", f"data.cache_dir={tmp_path}/c",
           "data.resolution=32", "train.max_steps=1", "train.batch_size=2", "train.grad_accum=1",
           "validation.num_inference_steps=2", "validation.prompts=[a photo of an astronaut riding a horse]",
           "train.progress_bar=false"]  # one of the shipped prompts: the crash was in the first vae.decode
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (out / "validation").glob("*.png")) == ["reference.png", "step_000001.png"]
    assert (out / "pytorch_lora_weights.safetensors").is_file() and (out / "summary.json").is_file()


@pytest.mark.slow
def test_video_full_fine_tuning_reference_is_on_the_accelerators_device(tmp_path, data, fresh_accelerate,
                                                                         monkeypatch):
    """Issue 14 item 6: the frozen copy was never moved to accelerator.device (invisible on CPU, a device
    mismatch on any GPU). The recipe must build it with frozen_copy(model, accelerator.device)."""
    from mmalign.mllm.video import build as video_build
    from mmalign.training import distributed as train_module

    main = runpy.run_path(str(REPO / "recipes" / "video.py"))["main"]
    seen: dict[str, object] = {}
    real_copy, real_accelerator = video_build.frozen_copy, train_module.make_accelerator

    def spy_copy(model, device=None, dtype=None):
        seen["device"] = device
        ref = real_copy(model, device, dtype)
        seen["ref_device"] = next(ref.parameters()).device
        return ref

    def spy_accelerator(*args, **kwargs):
        seen["accelerator"] = accelerator = real_accelerator(*args, **kwargs)
        return accelerator

    monkeypatch.setattr(video_build, "frozen_copy", spy_copy)
    monkeypatch.setattr(train_module, "make_accelerator", spy_accelerator)
    summary = main(["--config", str(REPO / "recipes/configs/video/qwen25vl_rrpo.yaml"), "model.pretrained=tiny:qwen2vl",
                    "lora.rank=0", "model.dtype=float32", f"data.path={data['video:rrpo']}",
                    f"output_dir={tmp_path / 'out'}", "train.max_steps=1", "train.batch_size=2", "train.grad_accum=1",
                    "train.mixed_precision=no", "train.progress_bar=false", "data.max_length=512"])
    assert summary["steps"] == 1
    assert seen["device"] == seen["accelerator"].device and seen["ref_device"] == seen["accelerator"].device
    assert (tmp_path / "out" / "config.json").is_file()
