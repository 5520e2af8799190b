"""Fixtures: a tiny SD1.x pipeline and pairs on disk, and the diffusion recipe run once with ``toy_eval`` enabled."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_diffusion_recipe

CAPTIONS = ["a small red circle on the left", "a large blue square at the top", "a small yellow triangle in the center"]
SEEDS = [0, 1]
EVAL = [
    "toy_eval.enabled=true", "toy_eval.save_images=true", f"toy_eval.seeds={SEEDS}", "toy_eval.num_inference_steps=3",
    "toy_eval.guidance_scale=3.0", "toy_eval.grid_rows=2", "toy_eval.grid_columns=2",
]
SMALL_RUN = [
    "train.max_steps=3", "train.batch_size=2", "train.grad_accum=1", "train.mixed_precision=no",
    "train.optimizer=adamw", "train.warmup_steps=0", "train.lr_scheduler=constant", "train.lr=3e-2",
    "train.checkpoint_every=0", "train.progress_bar=false", "model.attention=sdpa", "data.resolution=32",
    "data.limit=6", "validation.prompts=[]",
]


@pytest.fixture(scope="package")
def tiny_inputs(tmp_path_factory):
    """``(model_dir, pairs_jsonl, captions_file)``: a tiny random SD1.x pipeline, generated pairs, 3 toy captions."""
    from mmalign.testing.placeholders import write_tiny_data
    from mmalign.testing.tiny_diffusion import save_tiny_pipeline

    root = tmp_path_factory.mktemp("toy_main_job_inputs")
    captions = root / "captions.txt"
    captions.write_text("\n".join(CAPTIONS) + "\n")
    return str(save_tiny_pipeline("sd15", root / "model")), str(write_tiny_data("pairs", root / "data")), str(captions)


@pytest.fixture(scope="package")
def run_recipe(tmp_path_factory, tiny_inputs):
    """``run_recipe(name, *overrides) -> (result, output_dir, summary)``: recipes/diffusion.py on toy_dpo.yaml with
    the tiny inputs and toy_eval enabled on 3 captions x 2 seeds; each (name, overrides) runs once for the folder
    (test_toy_eval.py and test_evaluate_matches_toy_eval.py read the same runs)."""
    model_dir, data_path, captions = tiny_inputs
    root = tmp_path_factory.mktemp("toy_main_job_runs")
    done: dict = {}

    def run(name: str, *overrides: str):
        if (name, overrides) in done:
            return done[(name, overrides)]
        out = root / name
        result = run_diffusion_recipe("toy_dpo.yaml", model_dir, data_path, out, *EVAL, f"toy_eval.captions={captions}",
                                      *overrides, cache_dir=root / "cache", small_run=SMALL_RUN)
        done[(name, overrides)] = result, out, json.loads((out / "summary.json").read_text())
        return done[(name, overrides)]

    return run
