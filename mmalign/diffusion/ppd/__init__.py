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

from mmalign.diffusion.ppd.attention import (
    UserAttnProcessor,
    add_user_branch,
    set_user_scale,
    user_processors,
)
from mmalign.diffusion.ppd.config import PpdConfig
from mmalign.diffusion.ppd.embeddings import Shot, UserEmbeddingCache, clip_user_embedding, vlm_user_embedding
from mmalign.diffusion.ppd.export import load_user_adapter, save_user_adapter
from mmalign.diffusion.ppd.inference import generate, interpolate_users
from mmalign.diffusion.ppd.model import UserConditionedUNet
from mmalign.diffusion.ppd.step import ppd_loss, ppd_step

__all__ = [
    "PpdConfig", "Shot", "UserAttnProcessor", "UserConditionedUNet", "UserEmbeddingCache", "add_user_branch",
    "clip_user_embedding", "generate", "interpolate_users", "load_user_adapter", "ppd_loss", "ppd_step",
    "save_user_adapter", "set_user_scale", "user_processors", "vlm_user_embedding",
]
