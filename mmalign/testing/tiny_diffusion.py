"""Tiny random-weight REAL diffusers pipelines (for tests and the toy world) and full-size architectures.

Every builder instantiates the real classes from configs — ``UNet2DConditionModel``, ``AutoencoderKL``,
``CLIPTextModel`` / ``CLIPTextModelWithProjection`` and the real CLIP BPE tokenizer
(:mod:`mmalign.clip_tokenizer`) — so the code paths are those of Stable Diffusion checkpoints; only the
sizes are small. Nothing is downloaded.

* :func:`tiny_sd15_pipeline` — ``StableDiffusionPipeline``, epsilon prediction (SD1.x layout);
* :func:`tiny_sd2_v_pipeline` — same layout with ``prediction_type="v_prediction"`` (SD2.x-768 style);
* :func:`tiny_sdxl_pipeline` — ``StableDiffusionXLPipeline`` with two text encoders, pooled embeddings and
  ``text_time`` micro-conditioning;
* :func:`save_tiny_pipeline` / :func:`load_pipeline` — the ``save_pretrained`` / ``from_pretrained`` round trip;
* :func:`full_size_unet` / :func:`full_size_pipeline` — SD1.5 / SDXL architectures with random weights
  (standard configs, for the GPU benchmark).

The VAE of the tiny pipelines has two blocks, i.e. it downsamples by 2 (real SD VAEs by 8): a 32×32 image
becomes a 4×16×16 latent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mmalign.testing.tiny_clip import tiny_clip_text_encoder

TINY_KINDS = ("sd15", "sd2v", "sdxl", "sd3", "flux")  # sd3 / flux: mmalign.testing.tiny_flow

# Stable Diffusion's noise schedule (scaled_linear 0.00085 → 0.012, 1000 steps).
_SCHEDULE = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    clip_sample=False, set_alpha_to_one=False, steps_offset=1,
)


def _scheduler(prediction_type: str):
    from diffusers import DDIMScheduler

    return DDIMScheduler(prediction_type=prediction_type, **_SCHEDULE)


def _tiny_vae(scaling_factor: float, seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=8, sample_size=32,
        scaling_factor=scaling_factor,
    ).eval()


def tiny_unet_config(cross_attention_dim: int = 32, sdxl: bool = False, pooled_dim: int = 32) -> dict[str, Any]:
    """A two-level UNet2DConditionModel config (~0.3M parameters)."""
    config: dict[str, Any] = dict(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=8,
    )
    if sdxl:
        config.update(
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            addition_embed_type="text_time", addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + pooled_dim, use_linear_projection=True,
        )
    return config


def _tiny_unet(config: dict[str, Any], seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**config)


def tiny_sd15_pipeline(seed: int = 0, prediction_type: str = "epsilon"):
    """A tiny ``StableDiffusionPipeline`` (SD1.x layout) with random weights and the real CLIP tokenizer."""
    from diffusers import StableDiffusionPipeline

    from mmalign.clip_tokenizer import load_clip_tokenizer

    return StableDiffusionPipeline(
        vae=_tiny_vae(0.18215, seed), text_encoder=tiny_clip_text_encoder(seed=seed + 1),
        tokenizer=load_clip_tokenizer(), unet=_tiny_unet(tiny_unet_config(), seed + 2),
        scheduler=_scheduler(prediction_type), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_sd2_v_pipeline(seed: int = 0):
    """SD2.x-768 style: the SD layout with ``prediction_type="v_prediction"``."""
    return tiny_sd15_pipeline(seed=seed, prediction_type="v_prediction")


def tiny_sdxl_pipeline(seed: int = 0):
    """A tiny ``StableDiffusionXLPipeline``: two text encoders (hidden 32 + 32 → cross-attention 64),
    pooled projection of the second, ``text_time`` added conditioning (6 time ids)."""
    from diffusers import StableDiffusionXLPipeline

    from mmalign.clip_tokenizer import load_clip_tokenizer

    tokenizer = load_clip_tokenizer()
    return StableDiffusionXLPipeline(
        vae=_tiny_vae(0.13025, seed), text_encoder=tiny_clip_text_encoder(seed=seed + 1),
        text_encoder_2=tiny_clip_text_encoder(with_projection=True, seed=seed + 3), tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=_tiny_unet(tiny_unet_config(cross_attention_dim=64, sdxl=True), seed + 2),
        scheduler=_scheduler("epsilon"), force_zeros_for_empty_prompt=True,
    )


def tiny_pipeline(kind: str, seed: int = 0):
    """``kind`` ∈ ``sd15 | sd2v | sdxl | sd3 | flux``."""
    if kind in ("sd3", "flux"):
        from mmalign.testing.tiny_flow import FLOW_BUILDERS

        return FLOW_BUILDERS[kind](seed=seed)
    builders = {"sd15": tiny_sd15_pipeline, "sd2v": tiny_sd2_v_pipeline, "sdxl": tiny_sdxl_pipeline}
    if kind not in builders:
        raise ValueError(f"unknown tiny pipeline kind '{kind}' (one of {', '.join(TINY_KINDS)})")
    return builders[kind](seed=seed)


def save_tiny_pipeline(kind: str, out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Build a tiny pipeline and ``save_pretrained`` it (safetensors) into ``out_dir``."""
    out = Path(out_dir)
    tiny_pipeline(kind, seed).save_pretrained(str(out), safe_serialization=True)
    return out


def load_pipeline(path: str | os.PathLike, torch_dtype: torch.dtype | None = None):
    """``DiffusionPipeline.from_pretrained`` on a local folder or hub id (class read from model_index.json)."""
    from diffusers import DiffusionPipeline

    kwargs = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
    return DiffusionPipeline.from_pretrained(str(path), **kwargs)


# ----------------------------------------------------------------------------------------------------
# Full-size architectures (random weights, standard configs of the released checkpoints)

SD15_UNET_CONFIG: dict[str, Any] = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
)
"""``runwayml/stable-diffusion-v1-5`` unet/config.json (859,520,964 parameters)."""

SDXL_UNET_CONFIG: dict[str, Any] = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=2048, attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10),
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32,
)
"""``stabilityai/stable-diffusion-xl-base-1.0`` unet/config.json (2,567,463,684 parameters)."""

SD_VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    sample_size=512,
)


def full_size_unet(kind: str = "sd15", dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """A full-size SD1.5 (``sd15``) or SDXL (``sdxl``) UNet with random weights (no download)."""
    from diffusers import UNet2DConditionModel

    configs = {"sd15": SD15_UNET_CONFIG, "sdxl": SDXL_UNET_CONFIG}
    if kind not in configs:
        raise ValueError(f"full-size kind must be sd15 or sdxl, got '{kind}'")
    with torch.device(device):
        unet = UNet2DConditionModel(**configs[kind])
    return unet.to(dtype)


def full_size_pipeline(kind: str = "sd15", dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """A complete SD1.5 or SDXL pipeline of the standard architecture with random weights."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, StableDiffusionXLPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from mmalign.clip_tokenizer import load_clip_tokenizer

    tokenizer = load_clip_tokenizer()
    common = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                  pad_token_id=49407)
    clip_l = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                            projection_dim=768, hidden_act="quick_gelu", **common)
    with torch.device(device):
        unet = full_size_unet(kind, dtype, device)
        if kind == "sd15":
            vae = AutoencoderKL(scaling_factor=0.18215, **SD_VAE_CONFIG)
            pipe = StableDiffusionPipeline(
                vae=vae, text_encoder=CLIPTextModel(clip_l), tokenizer=tokenizer, unet=unet,
                scheduler=_scheduler("epsilon"), safety_checker=None, feature_extractor=None,
                requires_safety_checker=False,
            )
        else:
            big_g = CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                   num_attention_heads=20, projection_dim=1280, hidden_act="gelu", **common)
            vae = AutoencoderKL(scaling_factor=0.13025, **{**SD_VAE_CONFIG, "sample_size": 1024})
            pipe = StableDiffusionXLPipeline(
                vae=vae, text_encoder=CLIPTextModel(clip_l), text_encoder_2=CLIPTextModelWithProjection(big_g),
                tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=_scheduler("epsilon"),
            )
    return pipe.to(dtype=dtype)
