"""The main job's toy-world evaluation (``toy_eval`` in recipes/diffusion.py, mmalign/toy/diffusion_eval.py).

One tiny LoRA-DPO run (random-weight SD1.x pipeline, 3 steps at a high learning rate so the LoRA visibly changes
the samples) with ``toy_eval`` on 3 captions x 2 seeds; then independent re-evaluations of fresh pipelines:
the recipe's base evaluation must equal the pipeline re-read from ``model.pretrained`` (adapters really disabled)
and its aligned evaluation must equal that pipeline with the exported LoRA loaded by ``load_lora_weights``.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mmalign.config import ConfigError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lora_run(run_recipe):
    return run_recipe("lora")


def _fresh_pipeline(model_dir: str, lora_dir: str | None = None):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model_dir)
    if lora_dir is not None:
        pipe.load_lora_weights(lora_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _independent_eval(pipe):
    from mmalign.toy.evaluate import evaluate_pipeline

    from .conftest import CAPTIONS, SEEDS

    return evaluate_pipeline(pipe, CAPTIONS, SEEDS, num_inference_steps=3, guidance_scale=3.0, return_images=True)


def test_summary_holds_toy_eval_and_grid(lora_run):
    result, out, summary = lora_run
    block = summary["toy_eval"]
    assert block == result["toy_eval"]
    assert block["num_images"] == 6 and block["num_captions"] == 3 and block["seeds"] == [0, 1]
    for key in ("base_mean", "aligned_mean", "mean_gain", "win_rate", "base_std_over_seeds",
                "aligned_std_over_seeds"):
        assert np.isfinite(block[key]), key
    assert block["mean_gain"] == pytest.approx(block["aligned_mean"] - block["base_mean"], abs=1e-12)
    assert 0.0 <= block["win_rate"] <= 1.0
    assert block["wins"] + block["ties"] + block["losses"] == 6
    grid = Image.open(block["grid"])
    assert grid.size[0] > 2 * 2 * 32 and grid.size[1] > 2 * 32  # 2 x 2 cells of base | aligned pairs
    assert (out / "pytorch_lora_weights.safetensors").is_file()


def test_base_equals_fresh_pipeline_and_aligned_equals_reloaded_lora(lora_run, tiny_inputs):
    _, out, summary = lora_run
    model_dir = tiny_inputs[0]
    saved = np.load(out / "toy_eval" / "images.npz")
    # the LoRA changed the samples, so equality below tells base and aligned apart
    assert np.abs(saved["base"].astype(int) - saved["aligned"].astype(int)).max() > 5

    base = _independent_eval(_fresh_pipeline(model_dir))
    assert np.abs(base["images"].astype(int) - saved["base"].astype(int)).max() <= 1
    assert base["mean"] == pytest.approx(summary["toy_eval"]["base_mean"], abs=1e-6)

    aligned = _independent_eval(_fresh_pipeline(model_dir, str(out)))
    assert np.abs(aligned["images"].astype(int) - saved["aligned"].astype(int)).max() <= 1
    assert aligned["mean"] == pytest.approx(summary["toy_eval"]["aligned_mean"], abs=1e-6)


def test_full_finetune_base_is_the_reference_copy(run_recipe, tiny_inputs):
    _, out, summary = run_recipe("full", "lora.rank=0", "train.lr=1e-3")
    saved = np.load(out / "toy_eval" / "images.npz")
    assert np.abs(saved["base"].astype(int) - saved["aligned"].astype(int)).max() > 5
    base = _independent_eval(_fresh_pipeline(tiny_inputs[0]))
    assert np.abs(base["images"].astype(int) - saved["base"].astype(int)).max() <= 1
    aligned = _independent_eval(_fresh_pipeline(str(out)))  # the exported full pipeline
    assert np.abs(aligned["images"].astype(int) - saved["aligned"].astype(int)).max() <= 1


def test_bad_caption_file_fails_before_training(tmp_path):
    from mmalign.diffusion.config import DiffusionRecipeConfig
    from mmalign.toy.diffusion_eval import check_toy_eval, eval_captions

    cfg = DiffusionRecipeConfig()
    cfg.eval.enabled = True
    assert len(eval_captions(cfg.eval)) == 108  # the toy world's held-out split by default
    bad = tmp_path / "captions.txt"
    bad.write_text("a small red circle on the left\na tiny red circle on the left\n")
    cfg.eval.captions = str(bad)
    with pytest.raises(ConfigError, match=r"captions.txt, caption 2: unknown size 'tiny'"):
        check_toy_eval(cfg)
    cfg.eval.captions = "heldout"
    cfg.method.name = "ppd"
    with pytest.raises(ConfigError, match="PPD"):
        check_toy_eval(cfg)


def test_grid_shows_images_spread_over_all_captions():
    from mmalign.toy.diffusion_eval import grid_indices

    shown = grid_indices(216, 24)  # 108 captions x 2 seeds, 6 x 4 grid
    assert len(shown) == 24 and shown[0] == 0 and shown[-1] == 215
    assert grid_indices(6, 8) == list(range(6))
