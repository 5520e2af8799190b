"""Sampling from a diffusers text-to-image pipeline whose components meet in explicit dtypes.

Training leaves the pipeline's parts in different dtypes: text encoders in the compute dtype, the UNet's frozen
base in the compute dtype (LoRA) or in float32 (full fine-tuning), the VAE in ``model.vae_dtype`` (float32 for
SDXL, whose VAE overflows in fp16). A plain ``pipe(...)`` only works when autocast reconciles them, and autocast
is off for fp16 on CPU and for fp16/bf16 under DeepSpeed (``Accelerator.native_amp`` is False there). So every
inference path of the package (validation grids, toy evaluation, ``mmalign label``, PPD sampling) goes through
:func:`generate`:

* the denoiser's floating inputs (latents, prompt embeddings, SDXL ``added_cond_kwargs``, PPD user tokens) are cast
  to the denoiser's own dtype (``unet.dtype``: its first floating parameter) by a forward pre-hook held for the
  call; the timestep is left as it is (bf16 cannot hold every integer timestep);
* the pipeline returns latents (``output_type="latent"``) and :func:`decode_latents` decodes them in the VAE's
  dtype with autocast disabled — as diffusers' ``upcast_vae`` does, and so the decode really runs in
  ``model.vae_dtype`` even when the caller's autocast is on.

``autocast`` (e.g. ``accelerator.autocast``) still wraps the denoising loop when given: it is a speed-up only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch


def denoiser(pipe) -> torch.nn.Module:
    """The pipeline's denoising network (``unet`` of SD/SDXL pipelines, ``transformer`` of DiT pipelines)."""
    module = getattr(pipe, "unet", None)
    return module if module is not None else pipe.transformer


def _cast_floats(value: Any, dtype: torch.dtype) -> Any:
    if torch.is_tensor(value):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: _cast_floats(v, dtype) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cast_floats(v, dtype) for v in value)
    return value


@contextmanager
def inputs_cast_to_module_dtype(module: torch.nn.Module) -> Iterator[torch.dtype]:
    """While held, every floating tensor passed to ``module`` (positional or keyword, nested in dicts/lists) is
    cast to ``module.dtype``, except the timestep (second positional argument or ``timestep=``)."""
    dtype = module.dtype

    def hook(_module, args, kwargs):
        args = tuple(a if i == 1 else _cast_floats(a, dtype) for i, a in enumerate(args))
        kwargs = {k: v if k == "timestep" else _cast_floats(v, dtype) for k, v in kwargs.items()}
        return args, kwargs

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield dtype
    finally:
        handle.remove()


@torch.no_grad()
def decode_latents(pipe, latents: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (float32) from final latents: un-scaled as the pipeline does (``latents_mean/std`` when
    the VAE config has them, ``shift_factor`` likewise) and decoded in the VAE's own dtype with autocast off (an
    fp16 VAE whose config says ``force_upcast`` decodes in float32, as diffusers' SDXL pipeline does)."""
    vae = pipe.vae
    cfg = vae.config
    latents = latents.to(vae.device, torch.float32)
    mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
    if mean is not None and std is not None:
        shape = (1, len(mean), *[1] * (latents.dim() - 2))
        latents = latents * torch.tensor(std).view(shape).to(latents) / cfg.scaling_factor + torch.tensor(mean).view(
            shape).to(latents)
    else:
        latents = latents / cfg.scaling_factor + (getattr(cfg, "shift_factor", None) or 0.0)
    upcast = vae.dtype == torch.float16 and getattr(cfg, "force_upcast", False)
    if upcast:  # as the SDXL pipeline's upcast_vae: a VAE marked force_upcast overflows in fp16
        vae.to(torch.float32)
    try:
        with torch.autocast(device_type=latents.device.type, enabled=False):
            image = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
    finally:
        if upcast:
            vae.to(torch.float16)
    return image.float()


@torch.no_grad()
def generate(pipe, prompts: str | Sequence[str] | None, *, output_type: str = "pil",
             autocast: Callable[[], Any] = nullcontext, **pipe_kwargs) -> Any:
    """``pipe(prompts, **pipe_kwargs)`` with explicit dtypes (module docstring); returns the images as
    ``output_type`` (``pil``: list of PIL images, ``np``: float array (N, H, W, 3) in [0, 1], ``pt``: tensor
    (N, 3, H, W) in [0, 1], ``latent``: the final latents, FLUX's unpacked to (N, C, h, w)). ``prompts=None``:
    the conditioning comes as ``prompt_embeds=`` etc. in ``pipe_kwargs`` (cached embeddings; rollouts)."""
    if prompts is not None:
        pipe_kwargs["prompt"] = prompts if isinstance(prompts, str) else list(prompts)
    with inputs_cast_to_module_dtype(denoiser(pipe)), autocast():
        latents = pipe(output_type="latent", **pipe_kwargs).images
    if latents.dim() == 3 and hasattr(pipe, "_unpack_latents"):  # FLUX returns packed (N, h*w/4, 4C) latents
        size = pipe.default_sample_size * pipe.vae_scale_factor
        latents = pipe._unpack_latents(latents, pipe_kwargs.get("height") or size, pipe_kwargs.get("width") or size,
                                       pipe.vae_scale_factor)
    if output_type == "latent":
        return latents
    return pipe.image_processor.postprocess(decode_latents(pipe, latents), output_type=output_type)
