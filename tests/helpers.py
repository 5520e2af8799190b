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


def switched_config(config: str, method: str, out_dir: str | os.PathLike) -> str:
    """A copy of ``recipes/configs/diffusion/<config>`` switched to ``method`` (what the old method read and the new
    one does not dropped: :func:`mmalign.diffusion.registry.switch_method`), written under ``out_dir``."""
    import yaml

    from mmalign.diffusion.registry import switch_method

    raw = yaml.safe_load((REPO / "recipes" / "configs" / "diffusion" / config).read_text())
    path = Path(out_dir) / f"{method}_from_{config}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(switch_method(raw, method), sort_keys=False))
    return str(path)


def perturb_lora(model: Any, *, scale: float, seed: int) -> None:
    """Set every ``lora_B`` of ``model`` to seeded ``N(0, scale^2)`` noise: a "trained" adapter, so the policy
    differs from its adapters-off reference (LoRA starts with B = 0)."""
    import torch

    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def max_change(a: Any, b: Any) -> float:
    """The largest absolute difference between the parameters of two modules of the same architecture."""
    return max(float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def lora_step_setup(model_dir: str, method: Any, *, pairs: int = 2, perturb: bool = True,
                    image_keys: bool = False) -> tuple[Any, Any, dict[str, Any]]:
    """``(parts, ctx, batch)`` for calling a diffusion step directly: a tiny pipeline from ``model_dir`` with a
    rank-4 LoRA (B perturbed so policy != reference unless ``perturb=False``), the reference = adapters off, and a
    cached-latent batch of ``pairs`` pairs (``[winners ; losers]``, ``image_keys`` for the inversion methods)."""
    import torch

    from mmalign.diffusion.adapter import load_parts
    from mmalign.diffusion.inputs import InputBuilder
    from mmalign.diffusion.lora import add_lora
    from mmalign.diffusion.methods import StepContext
    from mmalign.diffusion.reference import ReferenceProvider
    from mmalign.lora_config import diffusion_lora

    parts = load_parts(model_dir)
    add_lora(parts.unet, diffusion_lora(rank=4, alpha=8))
    if perturb:
        perturb_lora(parts.unet, scale=0.05, seed=1)
    inputs = InputBuilder(parts, resolution=32, latent_sample="mean")
    ctx = StepContext(parts, inputs, ReferenceProvider("lora"), method, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    batch = {
        "latent_mean": torch.randn(2 * pairs, 4, 16, 16, generator=g), "latent_std": torch.ones(2 * pairs, 4, 16, 16),
        "prompt_embeds": torch.randn(2 * pairs, 77, 32, generator=g), "groups": pairs, "group_size": 2,
    }
    if image_keys:
        batch["image_keys"] = [f"w{i}" for i in range(pairs)] + [f"l{i}" for i in range(pairs)]
    return parts, ctx, batch
