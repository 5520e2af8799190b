"""What several test folders share: the repository root, log 2, and the small diffusion recipe run.

Imported as ``from tests.helpers import ...`` (the repository root is on pytest's ``pythonpath``); fixtures stay in
the ``conftest.py`` of the folder that uses them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
"""The repository root (recipes/, assets/, bench/ are read from here)."""
LOG2 = math.log(2)
"""Every pairwise loss at initialisation (policy == reference): -log sigmoid(0)."""

SMALL_DIFFUSION_RUN = (
    "train.max_steps=2", "train.batch_size=2", "train.grad_accum=1", "train.mixed_precision=no",
    "train.optimizer=adamw", "train.warmup_steps=0", "train.lr_scheduler=constant", "train.lr=1e-3",
    "train.checkpoint_every=0", "train.progress_bar=false", "model.attention=sdpa",
    "model.gradient_checkpointing=false", "data.resolution=32", "validation.prompts=[]",
)
"""Overrides that make a shipped diffusion config a two-step CPU run on tiny models."""


def run_diffusion_recipe(config: str, model_dir: str | os.PathLike, data_path: str | os.PathLike,
                         output_dir: str | os.PathLike, *overrides: str, cache_dir: str | os.PathLike | None = None,
                         small_run: Sequence[str] = SMALL_DIFFUSION_RUN) -> dict[str, Any]:
    """``recipes/diffusion.py`` on ``recipes/configs/diffusion/<config>`` in this process (accelerate's state reset
    around it, :func:`mmalign.recipe_entry.run_recipe_file`); returns its summary."""
    from mmalign.recipe_entry import run_recipe_file

    cache_dir = cache_dir or Path(output_dir).parent / "cache"
    argv = ["--config", str(REPO / "recipes" / "configs" / "diffusion" / config), *small_run,
            f"model.pretrained={model_dir}", f"data.path={data_path}", f"output_dir={output_dir}",
            f"data.cache_dir={cache_dir}", *overrides]
    return run_recipe_file(REPO / "recipes" / "diffusion.py", argv)
