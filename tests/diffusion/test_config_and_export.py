"""Bad configs fail before any model loads, naming the key; ``mmalign export --merge`` writes a merged pipeline
equal to base + LoRA; ``mmalign cache`` prebuilds what a run then reuses."""

from __future__ import annotations

import json

import pytest
import torch

from mmalign.config import ConfigError


@pytest.fixture
def no_model_loading(monkeypatch):
    import mmalign.diffusion.adapter as adapter

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the config was validated")

    monkeypatch.setattr(adapter, "load_parts", forbidden)


def test_unknown_key_fails_before_model_load(run_recipe, tiny_model_dirs, data_dirs, no_model_loading):
    with pytest.raises(ConfigError, match="method.betta"):
        run_recipe("sd15_dpo.yaml", tiny_model_dirs["sd15"], data_dirs["pairs"], "method.betta=1")


def test_missing_model_path_fails_before_model_load(run_recipe, data_dirs, tmp_path, no_model_loading):
    with pytest.raises(ConfigError, match="model.pretrained.*does not exist"):
        run_recipe("sd15_dpo.yaml", str(tmp_path / "nope"), data_dirs["pairs"])


def test_bad_method_and_data_kind(run_recipe, tiny_model_dirs, data_dirs, no_model_loading):
    with pytest.raises(ConfigError, match="method.name"):
        run_recipe("sd15_dpo.yaml", tiny_model_dirs["sd15"], data_dirs["pairs"], "method.name=ppo")
    with pytest.raises(ConfigError, match="data.kind"):
        run_recipe("sd15_dpo.yaml", tiny_model_dirs["sd15"], data_dirs["pairs"], "data.kind=ranked")


@pytest.mark.slow
def test_export_merge_and_cache_command(run_recipe, tiny_model_dirs, data_dirs, tmp_path, capsys):
    from diffusers import StableDiffusionPipeline

    from mmalign.cli import main as cli

    # mmalign cache prebuilds; the run then reuses every entry
    config = "recipes/configs/diffusion/sd15_dpo.yaml"
    assert cli(["cache", "--config", config, "--device", "cpu", f"model.pretrained={tiny_model_dirs['sd15']}",
                f"data.path={data_dirs['pairs']}", "data.resolution=32", f"data.cache_dir={tmp_path / 'cache'}"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images_encoded"] == 8
    summary = run_recipe("sd15_dpo.yaml", tiny_model_dirs["sd15"], data_dirs["pairs"], "train.checkpoint_at_end=true",
                         "lora.alpha=16")
    assert summary["data"]["images_encoded"] == 0 and summary["data"]["images_reused"] == 8
    out = tmp_path / "out"
    checkpoint = out / "checkpoints" / "checkpoint-2"
    assert checkpoint.is_dir()

    assert cli(["export", str(checkpoint), "--merge", "--out", str(tmp_path / "merged")]) == 0
    assert cli(["export", str(checkpoint), "--out", str(tmp_path / "lora")]) == 0
    merged = StableDiffusionPipeline.from_pretrained(str(tmp_path / "merged"))
    assert not any("lora" in n for n, _ in merged.unet.named_parameters())
    x, t, c = torch.randn(1, 4, 16, 16), torch.tensor([300]), torch.randn(1, 77, 32)
    with torch.no_grad():
        got = merged.unet(x, t, c).sample
        for lora_dir in (out, tmp_path / "lora"):  # the run's export and the checkpoint's export agree
            pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dirs["sd15"])
            pipe.load_lora_weights(str(lora_dir))
            torch.testing.assert_close(got, pipe.unet(x, t, c).sample, rtol=1e-4, atol=1e-5)
    assert cli(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
