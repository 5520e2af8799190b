"""SmPO and InPO run end to end through the real recipe (``recipes/diffusion.py``) with the shipped configs on
tiny random-weight pipelines, per-device batch size 2: soft labels written once and reused, finite losses, LoRA
weights moved, outputs written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.helpers import REPO

pytestmark = pytest.mark.slow


def _lora_moved(out: Path) -> float:
    """Largest |B| weight of the exported LoRA (peft gaussian init starts B = 0)."""
    weights = load_file(str(out / "pytorch_lora_weights.safetensors"))
    ups = [v for k, v in weights.items() if "lora.up" in k or "lora_B" in k]
    assert ups
    return max(float(v.abs().max()) for v in ups)


def _check(summary: dict, out: Path, method: str) -> None:
    assert summary["steps"] == 2 and summary["method"] == method
    assert json.loads((out / "summary.json").read_text())["method"] == method
    assert all(math.isfinite(h["loss"]) for h in summary["history"])
    assert _lora_moved(out) > 0


def test_toy_inpo_sd15(run_recipe, tiny_dirs, pairs_path, tmp_path):
    summary = run_recipe("toy_inpo.yaml", tiny_dirs["sd15"], pairs_path, "method.inpo.noise.inversion_steps=4")
    _check(summary, tmp_path / "out", "inpo")
    final = summary["final"]
    assert final["implied_noise_std"] > 0 and "implicit_acc" in final


def test_toy_smpo_sd15_labels_once(run_recipe, tiny_dirs, pairs_path, tmp_path):
    overrides = ("method.smpo.noise.inversion_steps=4", "method.smpo.scorer=tiny:pickscore")
    summary = run_recipe("toy_smpo.yaml", tiny_dirs["sd15"], pairs_path, *overrides)
    _check(summary, tmp_path / "out", "smpo")
    files = list((tmp_path / "cache" / "smpo_labels").glob("*.json"))
    assert len(files) == 1
    doc = json.loads(files[0].read_text())
    assert doc["num_pairs"] == 4 and doc["reward_min"] < doc["reward_max"]
    values = [r for pair in doc["pairs"].values() for r in pair]
    assert min(values) == doc["reward_min"] and max(values) == doc["reward_max"]  # constants from the data
    assert 0.0 <= summary["final"]["kappa"] <= 4.63
    stamp = files[0].stat().st_mtime_ns
    run_recipe("toy_smpo.yaml", tiny_dirs["sd15"], pairs_path, *overrides, "train.max_steps=1", out="again")
    assert files[0].stat().st_mtime_ns == stamp  # stored once, reused


def test_sdxl_smpo_config_with_tiny_overrides(run_recipe, tiny_dirs, pairs_path, tmp_path):
    """The SDXL config (full fine-tuning, Adafactor, renoise) on the tiny SDXL pipeline, human label order."""
    summary = run_recipe(
        "sdxl_smpo.yaml", tiny_dirs["sdxl"], pairs_path, "method.smpo.noise.inversion_steps=3", "lora.rank=0",
        "method.smpo.scorer=tiny:clipscore", "method.smpo.order=human", "train.optimizer=adafactor",
    )
    assert summary["family"] == "sdxl" and summary["setup"]["mode"] == "full"
    assert summary["setup"]["reference"] == "frozen_copy"
    assert all(math.isfinite(h["loss"]) for h in summary["history"])
    assert summary["final"]["smpo_swapped"] == 0.0


@pytest.mark.parametrize("name", ["sd15_smpo", "sdxl_smpo", "sd15_inpo", "sdxl_inpo", "toy_smpo", "toy_inpo"])
def test_configs_load_with_launch_command(name):
    from mmalign.config import load_config
    from mmalign.diffusion.config import DiffusionRecipeConfig
    from mmalign.diffusion.noise_providers import checked

    path = REPO / "recipes" / "configs" / "diffusion" / f"{name}.yaml"
    assert path.read_text().startswith(f"# accelerate launch recipes/diffusion.py --config {path.relative_to(path.parents[3])}")
    cfg = load_config(DiffusionRecipeConfig, str(path), [])
    method = name.split("_")[1]
    assert cfg.method.name == method
    noise = checked(getattr(cfg.method, method).noise, method)
    assert noise.provider == {"smpo": "renoise", "inpo": "ddim"}[method]
    assert noise.eta == (0.1 if method == "inpo" else 0.0) and noise.inversion_model == "policy"
    assert noise.convention == "official"  # set in the file: diffusers 0.20 semantics (issue 16)
    assert noise.inversion_steps == (5 if name == "sd15_smpo" or name == "toy_smpo" else 10)
    with pytest.raises(ValueError, match="inversion_model"):
        noise.inversion_model = "ema"
        checked(noise, method)
