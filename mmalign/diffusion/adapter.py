"""Model-family adapter: what differs between SD1.x / SD2.x, SDXL, SD3 / SD3.5 and FLUX.1, in small functions.

Families: ``sd`` and ``sdxl`` (UNet, ε / v targets, DDPM training schedule) and the flow-matching DiTs ``sd3``
(``StableDiffusion3Pipeline``: ``SD3Transformer2DModel``) and ``flux`` (``FluxPipeline``:
``FluxTransformer2DModel``), velocity target, ``FlowMatchEulerDiscreteScheduler`` (see
:mod:`mmalign.diffusion.scores`). :attr:`DiffusionParts.denoiser` is the trained network of every family.

* :func:`load_parts` — the pipeline's components from a hub id or local folder (``DiffusionPipeline``);
* :func:`encode_text` — SD: last hidden state of the CLIP text encoder; SDXL: penultimate hidden states of both
  encoders concatenated (768 + 1280 → 2048 for the real model) plus the pooled projection of encoder 2
  (as ``StableDiffusionXLPipeline.encode_prompt``); SD3 / FLUX: the pipeline's own ``encode_prompt`` (SD3: both
  CLIP penultimate states concatenated, zero-padded to the T5 width and joined with the T5 states along the
  sequence, zeros for a checkpoint without T5, pooled = both CLIP projections; FLUX: T5 states, CLIP pooled
  output), ``max_sequence_length`` T5 tokens (:class:`FlowOptions`);
* :func:`preprocess_image` — resize (shorter side) + center crop to the training resolution, pixels in [-1, 1],
  and the SDXL micro-conditioning ids ``[orig_h, orig_w, crop_top, crop_left, res, res]`` (spec §9);
* :func:`encode_pixels` — VAE posterior (mean, std) × ``scaling_factor`` (SD3 / FLUX: ``(mean - shift_factor)``
  first, as their training scripts and pipelines); :func:`sample_latents` draws
  ``mean + std * eps`` as the official scripts' ``latent_dist.sample()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from mmalign.diffusion.flow_options import FLOW_DEFAULT_MAX_SEQUENCE_LENGTH, FLOW_FAMILIES, FlowOptions


@dataclass
class DiffusionParts:
    """The components training needs. ``family`` is ``sd``, ``sdxl``, ``sd3`` or ``flux``; ``unet`` is set for the
    UNet families, ``transformer`` for the flow families (:attr:`denoiser` is whichever is set)."""

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
    """The loaded pipeline (its ``unet`` / ``transformer`` is the object trained in place; validation images)."""
    transformer: Any = None
    flow: FlowOptions | None = None
    """Flow families only: timestep sampling, loss weighting, FLUX guidance, T5 length."""

    @property
    def denoiser(self) -> Any:
        """The trained network: ``unet`` (SD, SDXL) or ``transformer`` (SD3, FLUX)."""
        return self.transformer if self.transformer is not None else self.unet

    @property
    def denoiser_name(self) -> str:
        """The pipeline component name of :attr:`denoiser` (``unet`` | ``transformer``)."""
        return "transformer" if self.transformer is not None else "unet"

    @property
    def is_flow(self) -> bool:
        return self.family in FLOW_FAMILIES

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def shift_factor(self) -> float:
        """Latent shift subtracted before scaling (SD3 / FLUX VAEs; 0 for SD / SDXL)."""
        return float(getattr(self.vae.config, "shift_factor", None) or 0.0) if self.is_flow else 0.0

    @property
    def max_sequence_length(self) -> int:
        options = self.flow or FlowOptions()
        return int(options.max_sequence_length or FLOW_DEFAULT_MAX_SEQUENCE_LENGTH[self.family])


def apply_model_options(parts: DiffusionParts, model_cfg: Any) -> DiffusionParts:
    """Copy the flow settings of ``model_cfg`` (the config's ``model`` block; fields named as :class:`FlowOptions`)
    onto ``parts`` (flow families only; idempotent)."""
    if parts.is_flow and model_cfg is not None:
        parts.flow = FlowOptions(**{name: getattr(model_cfg, name) for name in FlowOptions.__dataclass_fields__
                                    if hasattr(model_cfg, name)})
    return parts


def pipeline_load_kwargs(pretrained: str, revision: str | None = None) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments for ``pretrained``: the revision, and ``text_encoder_3=None,
    tokenizer_3=None`` for an SD3 folder saved without T5 (model_index.json lists them as null; the pipeline then
    pads zeros in their place, and diffusers refuses to load it without being told)."""
    from diffusers import DiffusionPipeline

    kwargs: dict[str, Any] = {"revision": revision} if revision else {}
    index = DiffusionPipeline.load_config(pretrained, **kwargs)
    kwargs.update({name: None for name in ("text_encoder_3", "tokenizer_3") if index.get(name) == [None, None]})
    return kwargs


def load_parts(pretrained: str, revision: str | None = None, prediction_type: str | None = None,
               options: Any = None) -> DiffusionParts:
    """Load a Stable Diffusion (1.x/2.x), SDXL, SD3/SD3.5 or FLUX.1 pipeline and return its parts; training
    scheduler = DDPM (UNet families) or a private copy of the pipeline's ``FlowMatchEulerDiscreteScheduler`` (flow
    families; never ``set_timesteps``-ed, so its table is the training one). ``options``: the config's ``model``
    block (:func:`apply_model_options`)."""
    from diffusers import DDPMScheduler, DiffusionPipeline, StableDiffusionXLPipeline

    kwargs = pipeline_load_kwargs(pretrained, revision)
    if "safety_checker" in DiffusionPipeline.load_config(pretrained, **kwargs):
        kwargs.update(safety_checker=None, requires_safety_checker=False)  # not needed for training (1.2 GB)
    pipe = DiffusionPipeline.from_pretrained(pretrained, **kwargs)
    if hasattr(pipe, "transformer") and type(pipe).__name__ in ("StableDiffusion3Pipeline", "FluxPipeline"):
        return apply_model_options(_flow_parts(pipe, pretrained, prediction_type), options)
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


def _flow_parts(pipe, pretrained: str, prediction_type: str | None) -> DiffusionParts:
    from diffusers import FlowMatchEulerDiscreteScheduler

    if prediction_type not in (None, "flow"):
        raise ValueError(f"model.prediction_type: {type(pipe).__name__} is a flow-matching model ('flow'), "
                         f"got '{prediction_type}'")
    if type(pipe).__name__ == "StableDiffusion3Pipeline":
        family = "sd3"
        pairs = [(pipe.text_encoder, pipe.tokenizer), (pipe.text_encoder_2, pipe.tokenizer_2),
                 (pipe.text_encoder_3, pipe.tokenizer_3)]
    else:
        family = "flux"
        pairs = [(pipe.text_encoder, pipe.tokenizer), (pipe.text_encoder_2, pipe.tokenizer_2)]
    pairs = [(e, t) for e, t in pairs if e is not None]  # SD3 without T5: the pipeline pads zeros in its place
    for module in [pipe.vae, *(e for e, _ in pairs)]:
        module.requires_grad_(False).eval()
    return DiffusionParts(
        unet=None, transformer=pipe.transformer, vae=pipe.vae, text_encoders=[e for e, _ in pairs],
        tokenizers=[t for _, t in pairs], scheduler=FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config),
        family=family, prediction_type="flow", pipeline_class=type(pipe), source=str(pretrained), pipeline=pipe,
        flow=FlowOptions(),
    )


@torch.no_grad()
def encode_text(parts: DiffusionParts, prompts: list[str], device: torch.device | str) -> dict[str, torch.Tensor]:
    """``{"prompt_embeds": (B, L, D)}`` (+ ``"pooled": (B, P)`` for SDXL, SD3 and FLUX)."""
    if parts.is_flow:
        pipe = parts.pipeline
        if parts.family == "sd3":
            embeds, _, pooled, _ = pipe.encode_prompt(
                prompt=prompts, prompt_2=None, prompt_3=None, device=device, do_classifier_free_guidance=False,
                max_sequence_length=parts.max_sequence_length)
        else:
            embeds, pooled, _ = pipe.encode_prompt(prompt=prompts, prompt_2=None, device=device,
                                                   max_sequence_length=parts.max_sequence_length)
        return {"prompt_embeds": embeds, "pooled": pooled}
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
    return (dist.mean - parts.shift_factor) * parts.scaling_factor, dist.std * parts.scaling_factor


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
