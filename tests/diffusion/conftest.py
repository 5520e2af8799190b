"""Shared fixtures: tiny SD1.x / SD2.x-v / SDXL pipelines saved to disk, and small preference data sets."""

from __future__ import annotations

from functools import partial

import pytest

from mmalign.testing.placeholders import COLORS, square_image
from tests.helpers import run_diffusion_recipe

square = partial(square_image, size=32)
"""A colored square on a gray noisy background (distinct bytes per seed), 32 px."""


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory):
    """``{"sd15": path, "sd2v": path, "sdxl": path}`` of saved tiny pipelines."""
    from mmalign.testing.tiny_diffusion import TINY_KINDS, save_tiny_pipeline

    root = tmp_path_factory.mktemp("tiny_models")
    return {kind: str(save_tiny_pipeline(kind, root / kind)) for kind in TINY_KINDS}


@pytest.fixture(scope="session")
def data_dirs(tmp_path_factory):
    """jsonl data sets written with the data package's writers: pairs, dual, ranked, unpaired."""
    from mmalign.data import write_pairs_jsonl, write_ranked_jsonl, write_unpaired_jsonl

    root = tmp_path_factory.mktemp("data")
    names = list(COLORS)
    pairs, dual, ranked, unpaired = [], [], [], []
    for i in range(4):
        good, bad = names[i % 4], names[(i + 1) % 4]
        prompt = f"a {good} square"
        pairs.append({"prompt": prompt, "chosen": square(good, seed=i), "rejected": square(bad, seed=10 + i)})
        dual.append({**pairs[-1], "prompt_chosen": prompt, "prompt_rejected": f"a {bad} square"})
        ranked.append({"prompt": prompt, "images": [square(names[(i + j) % 4], seed=20 + 3 * i + j) for j in range(3)],
                       "scores": [1.0, 0.5, 0.0]})
        unpaired.append({"prompt": prompt, "image": square(good, seed=40 + i), "label": True})
        unpaired.append({"prompt": prompt, "image": square(bad, seed=50 + i), "label": False})
    return {
        "pairs": str(write_pairs_jsonl(pairs, root / "pairs" / "data.jsonl")),
        "dual": str(write_pairs_jsonl(dual, root / "dual" / "data.jsonl")),
        "ranked": str(write_ranked_jsonl(ranked, root / "ranked" / "data.jsonl")),
        "unpaired": str(write_unpaired_jsonl(unpaired, root / "unpaired" / "data.jsonl")),
    }




@pytest.fixture
def run_recipe(tmp_path):
    """``run_recipe(config_name, model_dir, data_path, *overrides) -> summary`` through the real recipe file
    (``recipes/diffusion.py``, tiny models, 2 steps unless overridden)."""

    def run(config: str, model_dir: str, data_path: str, *overrides: str, out: str = "out") -> dict:
        return run_diffusion_recipe(config, model_dir, data_path, tmp_path / out, *overrides,
                                    cache_dir=tmp_path / "cache")

    return run
