"""PPD — Personalized Preference Fine-tuning of Diffusion Models (Dang et al., CVPR 2025; spec §5).

* :mod:`.embeddings` — user embeddings from N few-shot pairs: a VLM's final-step hidden states across layers
  (``AutoModelForImageTextToText``, the paper) or a CLIP scorer's ``mean(chosen) - mean(rejected)``; disk cache;
* :mod:`.data` — shots vs training pairs per user (no leakage), batches carrying ``user_embeds``;
* :mod:`.projection`, :mod:`.attention`, :mod:`.model` — the user projection and decoupled (IP-Adapter style)
  user cross-attention on diffusers' processors; without a user the UNet is exactly the base;
* :mod:`.step` — multi-user Diffusion-DPO (reference = base UNet without the user branch);
* :mod:`.inference` — sampling with a user embedding, interpolation between users;
* :mod:`.export` — ``user_adapter.safetensors`` + ``user_adapter_config.json``, reload.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "attention": ("UserAttnProcessor", "add_user_branch", "set_user_scale", "user_processors"),
    "embeddings": ("Shot", "UserEmbeddingCache", "clip_user_embedding", "vlm_user_embedding"),
    "export": ("load_user_adapter", "save_user_adapter"),
    "inference": ("generate", "interpolate_users"),
    "model": ("UserConditionedUNet",),
    "step": ("ppd_loss", "ppd_step"),
}
_WHERE = {name: f"{__name__}.{module}" for module, names in _EXPORTS.items() for name in names}
_WHERE["PpdConfig"] = "mmalign.diffusion.options"  # the light options module (the config schema reads it)
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """The public names, imported on first use (``PpdConfig`` lives in the light :mod:`mmalign.diffusion.options`)."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_WHERE[name]), name)
