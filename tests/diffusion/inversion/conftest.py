"""Fixtures for the inversion / SmPO / InPO tests: tiny saved pipelines, a small pairs set, a recipe runner."""

from __future__ import annotations

from functools import partial

import pytest

from mmalign.testing.placeholders import COLORS, square_image
from tests.helpers import SMALL_DIFFUSION_RUN, run_diffusion_recipe

SMALL_RUN = [*SMALL_DIFFUSION_RUN, "lora.rank=4", "method.empty_prompt_prob=0.0", "eval.enabled=false"]


square = partial(square_image, size=32)
"""A colored square on a gray noisy background (distinct bytes per seed), 32 px."""


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """``{"sd15": path, "sdxl": path}`` of saved tiny random-weight pipelines (real diffusers classes)."""
    from mmalign.testing.tiny_diffusion import save_tiny_pipeline

    root = tmp_path_factory.mktemp("tiny_inv_models")
    return {kind: str(save_tiny_pipeline(kind, root / kind)) for kind in ("sd15", "sdxl")}


@pytest.fixture(scope="session")
def pairs_path(tmp_path_factory):
    """4 pairs "a {color} square" (the square of that color preferred), written with the data package's writer."""
    from mmalign.data import write_pairs_jsonl

    names = list(COLORS)
    rows = [{"prompt": f"a {names[i]} square", "chosen": square(names[i], seed=i),
             "rejected": square(names[(i + 1) % 4], seed=10 + i)} for i in range(4)]
    return str(write_pairs_jsonl(rows, tmp_path_factory.mktemp("inv_data") / "pairs.jsonl"))


@pytest.fixture
def run_recipe(tmp_path):
    """``run_recipe(config_name, model_dir, data_path, *overrides) -> summary`` through ``recipes/diffusion.py``."""

    def run(config: str, model_dir: str, data_path: str, *overrides: str, out: str = "out") -> dict:
        return run_diffusion_recipe(config, model_dir, data_path, tmp_path / out, *overrides,
                                    cache_dir=tmp_path / "cache", small_run=SMALL_RUN)

    return run


@pytest.fixture(scope="session")
def models():
    """Tiny SD1.x (epsilon), SD2.x (v) and SDXL pipelines' UNets, with their DDPM training schedulers."""
    from diffusers import DDPMScheduler

    from mmalign.testing.tiny_diffusion import tiny_pipeline

    out = {}
    for kind in ("sd15", "sd2v", "sdxl"):
        pipe = tiny_pipeline(kind)
        out[kind] = (pipe.unet.eval(), DDPMScheduler.from_config(pipe.scheduler.config))
    return out
