"""SD3 / FLUX LoRA export (diffusers format + adapter metadata) → ``StableDiffusion3Pipeline.load_lora_weights`` /
``FluxPipeline.load_lora_weights`` in a fresh pipeline reproduces the trained transformer's outputs exactly, also
with lora_alpha != rank and with the context-stream projections targeted."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from mmalign.diffusion.adapter import load_parts
from mmalign.diffusion.lora import LORA_WEIGHT_NAME, add_lora, merge_lora, save_lora
from mmalign.lora_config import diffusion_lora
from mmalign.testing.tiny_diffusion import load_pipeline
from tests.helpers import perturb_lora

TARGETS = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
           "attn.add_v_proj", "attn.to_add_out"]
DIFFUSERS_FLUX_TARGETS = ["attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0", "attn.add_k_proj", "attn.add_q_proj",
                          "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
                          "ff_context.net.2"]
"""huggingface/diffusers ``examples/dreambooth/train_dreambooth_lora_flux.py``: ``target_modules`` when
``--lora_layers`` is not given (transcribed)."""


def _forward(family: str, model):
    g = torch.Generator().manual_seed(0)
    if family == "sd3":
        return model(hidden_states=torch.randn(2, 16, 16, 16, generator=g), timestep=torch.tensor([100.0, 800.0]),
                     encoder_hidden_states=torch.randn(2, 20, 96, generator=g),
                     pooled_projections=torch.randn(2, 64, generator=g)).sample
    ids = torch.stack(torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij"), -1).reshape(-1, 2).float()
    return model(hidden_states=torch.randn(2, 64, 64, generator=g), timestep=torch.tensor([0.1, 0.8]),
                 guidance=torch.tensor([3.5, 3.5]), pooled_projections=torch.randn(2, 32, generator=g),
                 encoder_hidden_states=torch.randn(2, 12, 32, generator=g), txt_ids=torch.zeros(12, 3),
                 img_ids=torch.cat([torch.zeros(64, 1), ids], 1)).sample


@pytest.mark.parametrize("kind,rank,alpha,targets", [("sd3", 4, 4.0, None), ("sd3", 4, 16.0, TARGETS),
                                                     ("flux", 2, 8.0, DIFFUSERS_FLUX_TARGETS)])
def test_flow_lora_roundtrip_is_exact(tiny_model_dirs, tmp_path, kind, rank, alpha, targets):
    parts = load_parts(tiny_model_dirs[kind])
    settings = diffusion_lora(rank=rank, alpha=alpha) if targets is None else diffusion_lora(rank=rank, alpha=alpha,
                                                                                     target_modules=targets)
    model = parts.denoiser
    add_lora(model, settings)
    perturb_lora(model, scale=0.1, seed=3)  # "trained" adapter: B != 0
    path = save_lora(model, parts.pipeline_class, tmp_path)
    assert path == tmp_path / LORA_WEIGHT_NAME
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
        assert "lora_adapter_metadata" in (f.metadata() or {})
    assert keys and all(k.startswith("transformer.") for k in keys)
    if targets is not None:
        assert any("add_q_proj" in k for k in keys)

    with torch.no_grad():
        trained = _forward(kind, model)
        fresh = load_pipeline(tiny_model_dirs[kind])
        base = _forward(kind, fresh.transformer)
        fresh.load_lora_weights(str(tmp_path))
        reloaded = _forward(kind, fresh.transformer)
    assert type(fresh).__name__ == {"sd3": "StableDiffusion3Pipeline", "flux": "FluxPipeline"}[kind]
    assert (trained - base).abs().max() > 1e-3
    assert torch.equal(trained, reloaded)

    merge_lora(model)
    assert not any("lora" in n for n, _ in model.named_parameters())
    with torch.no_grad():
        merged = _forward(kind, model)
    torch.testing.assert_close(merged, trained, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("config", ["flux_dpo.yaml", "flux_mapo.yaml"])
def test_flux_configs_target_what_the_diffusers_flux_script_targets(config):
    """Issue 23 item 7: the shipped FLUX LoRA = the diffusers script's default targets, its four feed-forward
    layers included (main's YAMLs named the script but left ff.* / ff_context.* out)."""
    from mmalign.config import load_config
    from mmalign.diffusion.config import DiffusionRecipeConfig
    from tests.helpers import REPO

    cfg = load_config(DiffusionRecipeConfig, str(REPO / "recipes" / "configs" / "diffusion" / config))
    assert sorted(cfg.lora.target_modules) == sorted(DIFFUSERS_FLUX_TARGETS)
