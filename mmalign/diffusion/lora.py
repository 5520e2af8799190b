"""LoRA on the denoiser (UNet, or SD3 / FLUX transformer; peft ``LoraConfig`` via diffusers ``add_adapter``) and
export in diffusers format.

Transformers (SD3 / FLUX): the same ``lora.target_modules`` suffixes match their attention projections
(``to_q/to_k/to_v/to_out.0`` of every joint and single block; the shipped configs add the context-stream
``add_q_proj/add_k_proj/add_v_proj/to_add_out`` as diffusers' ``train_dreambooth_lora_sd3.py``); the export is
``get_peft_model_state_dict(transformer)`` → ``<Pipeline>.save_lora_weights(transformer_lora_layers=...,
transformer_lora_adapter_metadata=...)`` as diffusers' SD3 / FLUX LoRA scripts, loadable by
``StableDiffusion3Pipeline.load_lora_weights`` / ``FluxPipeline.load_lora_weights``.

Export writes ``pytorch_lora_weights.safetensors`` exactly as the diffusers training scripts do
(``convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))`` → ``<Pipeline>.save_lora_weights``) **plus**
the adapter metadata (``unet_lora_adapter_metadata`` = the ``LoraConfig`` dict, diffusers >= 0.35 stores it in the
safetensors header as ``lora_adapter_metadata``). Without it, ``load_lora_weights`` assumes
``lora_alpha == rank`` and a run trained with ``alpha != rank`` would reload with a different scale
(spec/ecosystem.md §A.2). ``pipe.load_lora_weights(dir)`` then reproduces the trained UNet exactly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mmalign.lora_config import LoraConfig

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def peft_lora_config(settings: LoraConfig):
    """peft ``LoraConfig`` of the shared ``lora:`` block; targets are suffixes peft matches in the UNet."""
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(
        r=settings.rank, lora_alpha=settings.scale_alpha, init_lora_weights=settings.peft_init(),
        target_modules=list(settings.target_modules), lora_dropout=settings.dropout,
    )


def add_lora(unet, settings: LoraConfig) -> None:
    """Freeze the UNet and add a trainable LoRA adapter named ``default``."""
    unet.requires_grad_(False)
    unet.add_adapter(peft_lora_config(settings))


def lora_state_dict(unet) -> dict[str, torch.Tensor]:
    """diffusers-format LoRA weights of the UNet (keys without the ``unet.`` prefix); a transformer's peft state
    dict as the diffusers SD3 / FLUX scripts save it."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(unet)
    return state if is_transformer(unet) else convert_state_dict_to_diffusers(state)


def is_transformer(model) -> bool:
    """A DiT denoiser (SD3 / FLUX transformer) rather than a UNet."""
    return "Transformer" in type(model).__name__


def lora_metadata(unet) -> dict[str, Any]:
    config = unet.peft_config["default"].to_dict()
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}


def save_lora(unet, pipeline_class: type, out_dir: str | os.PathLike) -> Path:
    """Write ``<out_dir>/pytorch_lora_weights.safetensors`` (diffusers format, with adapter metadata)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in lora_state_dict(unet).items()}
    name = "transformer" if is_transformer(unet) else "unet"
    pipeline_class.save_lora_weights(
        str(out), safe_serialization=True, **{f"{name}_lora_layers": weights,
                                              f"{name}_lora_adapter_metadata": lora_metadata(unet)}
    )
    return out / LORA_WEIGHT_NAME


def merge_lora(unet) -> None:
    """Fold the LoRA adapter into the base weights and remove the adapter layers (in place)."""
    unet.fuse_lora(lora_scale=1.0)
    unet.unload_lora()
