"""Model-family adapter: what differs between SD1.x / SD2.x and SDXL, in four small functions.

* :func:`load_parts` — the pipeline's components from a hub id or local folder (``DiffusionPipeline``);
* :func:`encode_text` — SD: last hidden state of the CLIP text encoder; SDXL: penultimate hidden states of both
  encoders concatenated (768 + 1280 → 2048 for the real model) plus the pooled projection of encoder 2
  (as ``StableDiffusionXLPipeline.encode_prompt``);
* :func:`preprocess_image` — resize (shorter side) + center crop to the training resolution, pixels in [-1, 1],
  and the SDXL micro-conditioning ids ``[orig_h, orig_w, crop_top, crop_left, res, res]`` (spec §9);
* :func:`encode_pixels` — VAE posterior (mean, std) × ``scaling_factor``; :func:`sample_latents` draws
  ``mean + std * eps`` as the official scripts' ``latent_dist.sample()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image


@dataclass
class DiffusionParts:
    """The components training needs. ``family`` is ``sd`` or ``sdxl``."""

    unet: Any
    vae: Any
    text_encoders: list[Any]
    tokenizers: list[Any]
    scheduler: Any
    family: str
    prediction_type: str
    pipeline_class: type
    source: str
    pipeline: Any = None
    """The loaded pipeline (its ``unet`` is the object trained in place; used for validation images)."""

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)


def load_parts(pretrained: str, revision: str | None = None, prediction_type: str | None = None) -> DiffusionParts:
    """Load a Stable Diffusion (1.x/2.x) or SDXL pipeline and return its parts; training scheduler = DDPM."""
    from diffusers import DDPMScheduler, DiffusionPipeline, StableDiffusionXLPipeline

    kwargs: dict[str, Any] = {"revision": revision} if revision else {}
    if "safety_checker" in DiffusionPipeline.load_config(pretrained, **kwargs):
        kwargs.update(safety_checker=None, requires_safety_checker=False)  # not needed for training (1.2 GB)
    pipe = DiffusionPipeline.from_pretrained(pretrained, **kwargs)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    ptype = prediction_type or scheduler.config.prediction_type
    if ptype not in ("epsilon", "v_prediction", "flow"):
        raise ValueError(f"model.prediction_type: unsupported '{ptype}' (epsilon, v_prediction, flow)")
    if isinstance(pipe, StableDiffusionXLPipeline):
        family, encoders, tokenizers = "sdxl", [pipe.text_encoder, pipe.text_encoder_2], [pipe.tokenizer, pipe.tokenizer_2]
    elif hasattr(pipe, "text_encoder") and hasattr(pipe, "unet"):
        family, encoders, tokenizers = "sd", [pipe.text_encoder], [pipe.tokenizer]
    else:
        raise ValueError(f"model.pretrained: {pretrained} is a {type(pipe).__name__}; expected SD1.x/2.x or SDXL")
    for module in [pipe.vae, *encoders]:
        module.requires_grad_(False).eval()
    return DiffusionParts(
        unet=pipe.unet, vae=pipe.vae, text_encoders=encoders, tokenizers=tokenizers, scheduler=scheduler,
        family=family, prediction_type=ptype, pipeline_class=type(pipe), source=str(pretrained), pipeline=pipe,
    )


@torch.no_grad()
def encode_text(parts: DiffusionParts, prompts: list[str], device: torch.device | str) -> dict[str, torch.Tensor]:
    """``{"prompt_embeds": (B, 77, D)}`` (+ ``"pooled": (B, P)`` for SDXL)."""
    if parts.family == "sd":
        ids = _tokenize(parts.tokenizers[0], prompts).to(device)
        return {"prompt_embeds": parts.text_encoders[0](ids)[0]}
    hidden, pooled = [], None
    for tokenizer, encoder in zip(parts.tokenizers, parts.text_encoders):
        out = encoder(_tokenize(tokenizer, prompts).to(device), output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
        pooled = out[0]  # text_embeds of CLIPTextModelWithProjection (the last encoder)
    return {"prompt_embeds": torch.cat(hidden, dim=-1), "pooled": pooled}


def _tokenize(tokenizer: Any, prompts: list[str]) -> torch.Tensor:
    return tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def preprocess_image(image: Image.Image, resolution: int, flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, res, res) pixels in [-1, 1] and SDXL time ids (6,) = original size, crop top-left, target size."""
    image = image.convert("RGB")
    w, h = image.size
    scale = resolution / min(w, h)
    new_w, new_h = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top, left = (new_h - resolution) // 2, (new_w - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1) / 127.5 - 1.0
    time_ids = torch.tensor([h, w, top, left, resolution, resolution], dtype=torch.float32)
    return pixels, time_ids


@torch.no_grad()
def encode_pixels(parts: DiffusionParts, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VAE posterior mean and std of ``pixels`` (B, 3, H, W), both multiplied by ``scaling_factor``."""
    vae = parts.vae
    dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
    return dist.mean * parts.scaling_factor, dist.std * parts.scaling_factor


def sample_latents(mean: torch.Tensor, std: torch.Tensor | None, generator: torch.Generator | None = None) -> torch.Tensor:
    """``latent_dist.sample()`` from cached moments (``std=None``: the mean)."""
    if std is None:
        return mean
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + std * eps


def constant_time_ids(batch: int, resolution: int, device: torch.device | str) -> torch.Tensor:
    """Official DiffusionDPO convention: ``[res, res, 0, 0, res, res]`` for every sample."""
    row = torch.tensor([resolution, resolution, 0, 0, resolution, resolution], dtype=torch.float32, device=device)
    return row.expand(batch, 6).clone()
