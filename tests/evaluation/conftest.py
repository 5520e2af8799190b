"""Fixtures: tiny SD1.5 / SDXL / SD3 / FLUX pipelines on disk with a "trained" LoRA each, tiny scorer checkpoints."""

from __future__ import annotations

import pytest

KINDS = ("sd15", "sdxl", "sd3", "flux")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """``{kind: (pipeline_dir, lora_dir)}``: a tiny random pipeline and a LoRA on its denoiser with B != 0."""
    from mmalign.diffusion.adapter import load_parts
    from mmalign.diffusion.lora import add_lora, save_lora
    from mmalign.lora_config import diffusion_lora
    from mmalign.testing.tiny_diffusion import save_tiny_pipeline
    from tests.helpers import perturb_lora

    root = tmp_path_factory.mktemp("eval_models")
    out = {}
    for kind in KINDS:
        base = save_tiny_pipeline(kind, root / kind)
        parts = load_parts(str(base))
        add_lora(parts.denoiser, diffusion_lora(rank=4))
        perturb_lora(parts.denoiser, scale=0.3, seed=7)
        lora = root / f"{kind}_lora"
        save_lora(parts.denoiser, parts.pipeline_class, lora)
        out[kind] = (str(base), str(lora))
    return out


@pytest.fixture(scope="session")
def tiny_scorer_args(tmp_path_factory):
    """``--scorer pickscore,aesthetic`` arguments on tiny random-weight checkpoints (the official layouts)."""
    from mmalign.testing.tiny_scorers import save_tiny_scorer_checkpoints

    ckpt = save_tiny_scorer_checkpoints(tmp_path_factory.mktemp("eval_scorers"))
    return ["--scorer", "pickscore,aesthetic", "--scorer-arg", f"pickscore.checkpoint={ckpt['pickscore']['checkpoint']}",
            "--scorer-arg", f"aesthetic.checkpoint={ckpt['aesthetic']['checkpoint']}",
            "--scorer-arg", f"aesthetic.backbone_checkpoint={ckpt['aesthetic']['backbone_checkpoint']}"], ckpt
