"""LoRA on the UNet (peft ``LoraConfig`` via diffusers ``add_adapter``) and export in diffusers format.

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
    """diffusers-format LoRA weights of the UNet (keys without the ``unet.`` prefix)."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    return convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))


def lora_metadata(unet) -> dict[str, Any]:
    config = unet.peft_config["default"].to_dict()
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}


def save_lora(unet, pipeline_class: type, out_dir: str | os.PathLike) -> Path:
    """Write ``<out_dir>/pytorch_lora_weights.safetensors`` (diffusers format, with adapter metadata)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in lora_state_dict(unet).items()}
    pipeline_class.save_lora_weights(
        str(out), unet_lora_layers=weights, safe_serialization=True, unet_lora_adapter_metadata=lora_metadata(unet)
    )
    return out / LORA_WEIGHT_NAME


def merge_lora(unet) -> None:
    """Fold the LoRA adapter into the base weights and remove the adapter layers (in place)."""
    unet.fuse_lora(lora_scale=1.0)
    unet.unload_lora()
