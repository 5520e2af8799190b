"""Per-sample diffusion errors: the score every diffusion preference objective is built on.

``e(x0, c, t, eps) = mean over C,H,W of (f(x_t, c, t) - target)^2`` — element mean, as every official
implementation (spec §0.1); the DPO "score" of an image is ``-0.5 * e`` so that the ordinary DPO loss on scores
is the official Diffusion-DPO loss ``-logsig(-(beta/2) * ((e_w - e_ref_w) - (e_l - e_ref_l)))``.

Targets (spec §0.4):

* ``epsilon``: ``x_t = a x0 + s eps``, target ``eps`` (SD1.5, SDXL);
* ``v_prediction``: same ``x_t``, target ``v = a eps - s x0`` (diffusers ``get_velocity``; SD2.x-768);
* ``flow`` (rectified-flow models): ``x = (1 - sigma) x0 + sigma eps`` with ``sigma = t / T``,
  target ``eps - x0``, timestep passed as ``sigma * T``.

Flow-matching DiTs (families ``sd3`` / ``flux``, :func:`flow_errors`, :func:`flow_timesteps_and_noise`), as
diffusers' ``train_dreambooth_lora_sd3.py`` / ``train_dreambooth_lora_flux.py`` (and flow_grpo's
``train_sd3_dpo.py``, spec §0.4):

* ``u ~ compute_density_for_timestep_sampling(weighting_scheme, logit_mean, logit_std, mode_scale)``
  (logit-normal(0, 1) by default), ``index = int(u * T)``, ``t = scheduler.timesteps[index]`` and
  ``sigma = scheduler.sigmas[index] = t / T`` of the checkpoint's ``FlowMatchEulerDiscreteScheduler`` at
  construction — i.e. shifted by its ``shift`` (3.0 for SD3/SD3.5) unless the config uses dynamic shifting (FLUX,
  whose training scripts use the unshifted table as here); one ``(t, noise)`` per group, shared by its members;
* ``x_sigma = (1 - sigma) x0 + sigma eps``, target the velocity ``eps - x0``; the error is the element mean of
  ``compute_loss_weighting_for_sd3(weighting_scheme, sigma) * (pred - target)^2`` (weight 1 for logit_normal);
* SD3: ``transformer(x, timestep=t, encoder_hidden_states, pooled_projections)``; FLUX: latents packed 2x2
  (``FluxPipeline._pack_latents``; the target packed the same way, the element mean is unchanged), ``img_ids``
  from ``FluxPipeline._prepare_latent_image_ids``, zero ``txt_ids``, ``timestep = t / 1000`` (= sigma) and, for
  guidance-distilled checkpoints (``guidance_embeds``), ``guidance = model.guidance`` (3.5, the scripts' default).

Every input is cast to the denoiser's dtype before the call (no autocast needed); errors are float32.

Beta on flow models (every objective sees ``beta * Delta e`` with the same official ``-(beta/2)`` form). At the same
point, a velocity error is an ε error divided by ``(1 - sigma)^2`` (spec §0.4), so an ε-setting beta maps to about
``beta_eps * (1 - sigma)^2``: with beta 5000 (SD1.5/SDXL) that is ~300 at the median sigma of SD3's shifted
logit-normal (median ``1/(1-sigma)^2`` = 16) and ~1250 for FLUX's unshifted one (median 4). Published flow DPO:
beta 100 for SD3.5-M (yifan123/flow_grpo ``config/dpo.py``), the shipped SD3 default; for FLUX no published
offline DPO setting exists (the flow_grpo maintainer advised 500-2000 for FLUX LoRA, 2000 when 500 spiked:
flow_grpo#45/#47), the shipped FLUX default is 2000. Diffusion-KTO's weight (``method.kto.beta``, 1000 for eps)
transfers the same way (about 100 / 2000 on SD3 / FLUX); RankDPO uses the DPO value (its paper's SD3-M beta is unpublished); MaPO's beta weights its
margin against the SFT term and does not transfer (official 0.1 kept; no flow-model MaPO reference); SFT has
none. Computed by ``python -c`` over 200k draws, diffusers 0.42 schedulers (SD3 shift 3.0; FLUX dynamic shift).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

TimestepWeight = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def noisy_input_and_target(
    scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_t, target)`` for one parameterisation (see module docstring)."""
    if prediction_type == "flow":
        sigma = (t.float() / scheduler.config.num_train_timesteps).view(-1, *[1] * (x0.dim() - 1)).to(x0.dtype)
        return (1 - sigma) * x0 + sigma * noise, noise - x0
    x_t = scheduler.add_noise(x0, noise, t)
    if prediction_type == "epsilon":
        return x_t, noise
    if prediction_type == "v_prediction":
        return x_t, scheduler.get_velocity(x0, noise, t)
    raise ValueError(f"unknown prediction_type '{prediction_type}' (epsilon, v_prediction, flow)")


def per_sample_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Element-mean squared error per sample, in float32: shape (N,)."""
    return (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)


def sample_shared_timesteps_and_noise(
    groups: int, group_size: int, latent_shape: tuple[int, ...], num_train_timesteps: int,
    device: torch.device | str, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``t`` and one ``eps`` per group, shared by its ``group_size`` members, in the stacked layout
    ``[member 0 of every group; member 1 of every group; ...]`` (pairs: ``[w; l]``; official
    ``chunk(2)[0].repeat(2)``). Returns ``t`` (groups*group_size,) and ``noise`` (groups*group_size, *latent_shape)."""
    t = torch.randint(0, num_train_timesteps, (groups,), device=device, generator=generator)
    noise = torch.randn((groups, *latent_shape), device=device, generator=generator)
    return t.repeat(group_size), noise.repeat(group_size, *[1] * len(latent_shape))


def unet_errors(
    unet, scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor],
    prediction_type: str, weight: TimestepWeight | None = None, model_kwargs: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Per-sample errors of ``unet`` on ``x0`` (N, C, H, W) with conditioning ``cond`` (keys ``prompt_embeds``,
    optional ``pooled`` and ``time_ids`` for SDXL), multiplied by the optional weight ``omega(t)``.

    Latents and conditioning are cast to the UNet's weight dtype (no autocast needed). ``model_kwargs`` go to the
    model unchanged: inputs of a trainable part that owns its dtype (PPD's ``user_embeds``, cast by the
    user-conditioned UNet to its float32 projection)."""
    x_t, target = noisy_input_and_target(scheduler, x0, noise, t, prediction_type)
    timestep = t.float() if prediction_type == "flow" else t
    added = None
    if "pooled" in cond:
        added = {"text_embeds": cond["pooled"], "time_ids": cond["time_ids"]}
    dtype = next(p.dtype for p in _params(unet))
    pred = unet(
        x_t.to(dtype), timestep, encoder_hidden_states=cond["prompt_embeds"].to(dtype),
        added_cond_kwargs=_cast(added, dtype), **(model_kwargs or {}),
    ).sample
    errors = per_sample_error(pred, target)
    if weight is not None:
        errors = errors * weight(t, scheduler.alphas_cumprod.to(t.device)).to(errors)
    return errors


def _params(module):
    inner = getattr(module, "module", module)
    return inner.parameters()


def _cast(added: dict[str, torch.Tensor] | None, dtype: torch.dtype) -> dict[str, torch.Tensor] | None:
    return None if added is None else {k: v.to(dtype) for k, v in added.items()}


def snr_inverse_weight(t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """``1 / (1 + SNR_t)`` … an example hook; ``omega = 1`` is the official default (spec §0.4)."""
    abar = alphas_cumprod[t]
    return 1.0 - abar


TIMESTEP_WEIGHTS: dict[str, TimestepWeight | None] = {"none": None, "snr_inverse": snr_inverse_weight}


def flow_errors(model, parts, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor],
                weight: TimestepWeight | None = None) -> torch.Tensor:
    """Per-sample velocity errors of an SD3 / FLUX transformer (module docstring) on latents ``x0`` (N, C, h, w),
    conditioning ``cond`` (``prompt_embeds`` (N, L, D), ``pooled`` (N, P)) at timesteps ``t`` (N,) of
    :func:`flow_timesteps_and_noise`."""
    from diffusers import FluxPipeline
    from diffusers.training_utils import compute_loss_weighting_for_sd3

    if weight is not None:
        raise ValueError("method.timestep_weight is for DDPM schedules; flow models weight the loss by "
                         "model.weighting_scheme (compute_loss_weighting_for_sd3)")
    options = parts.flow
    sigma = t.float() / parts.scheduler.config.num_train_timesteps
    s = sigma.view(-1, *[1] * (x0.dim() - 1))
    x0, noise = x0.float(), noise.float()
    x_t, target = (1 - s) * x0 + s * noise, noise - x0
    dtype = next(p.dtype for p in _params(model))
    embeds, pooled = cond["prompt_embeds"].to(dtype), cond["pooled"].to(dtype)
    if parts.family == "sd3":
        pred = model(hidden_states=x_t.to(dtype), timestep=t.float(), encoder_hidden_states=embeds,
                     pooled_projections=pooled, return_dict=False)[0]
    elif parts.family == "flux":
        n, c, h, w = x0.shape
        packed = FluxPipeline._pack_latents(x_t.to(dtype), n, c, h, w)
        target = FluxPipeline._pack_latents(target, n, c, h, w)
        img_ids = FluxPipeline._prepare_latent_image_ids(n, h // 2, w // 2, x0.device, dtype)
        txt_ids = torch.zeros(embeds.shape[1], 3, device=x0.device, dtype=dtype)
        config = getattr(model, "config", None) or _bare(model).config
        guidance = (torch.full((n,), float(options.guidance), device=x0.device, dtype=torch.float32)
                    if config.guidance_embeds else None)
        pred = model(hidden_states=packed, timestep=sigma, guidance=guidance, pooled_projections=pooled,
                     encoder_hidden_states=embeds, txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
    else:
        raise ValueError(f"flow_errors: family '{parts.family}' is not a flow-matching family (sd3, flux)")
    errors = per_sample_error(pred, target)
    return errors * compute_loss_weighting_for_sd3(options.weighting_scheme, sigma).float()


def flow_timesteps_and_noise(parts, groups: int, group_size: int, latent_shape: tuple[int, ...],
                             device: torch.device | str, generator: torch.Generator | None = None,
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """SD3 / FLUX training ``(t, noise)`` (module docstring), one draw per group, member-major layout: ``t`` (N,)
    float scheduler timesteps (``sigma * 1000``), ``noise`` (N, *latent_shape)."""
    from diffusers.training_utils import compute_density_for_timestep_sampling

    options, scheduler = parts.flow, parts.scheduler
    gen_device = generator.device if generator is not None else "cpu"
    u = compute_density_for_timestep_sampling(
        weighting_scheme=options.weighting_scheme, batch_size=groups, logit_mean=options.logit_mean,
        logit_std=options.logit_std, mode_scale=options.mode_scale, device=gen_device, generator=generator)
    total = int(scheduler.config.num_train_timesteps)
    index = (u * total).long().clamp(0, total - 1).cpu()
    t = scheduler.timesteps[index].to(device=device, dtype=torch.float32)
    noise = torch.randn((groups, *latent_shape), device=device, generator=generator)
    return t.repeat(group_size), noise.repeat(group_size, *[1] * len(latent_shape))


def _bare(module):
    while hasattr(module, "module") or hasattr(module, "_orig_mod"):
        module = getattr(module, "module", None) or module._orig_mod
    return module


def model_errors(model, parts, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor],
                 weight: TimestepWeight | None = None) -> torch.Tensor:
    """Per-sample errors of the denoiser ``model`` of the family of ``parts`` (a
    :class:`mmalign.diffusion.adapter.DiffusionParts`): what every method step calls."""
    if getattr(parts, "is_flow", False):
        return flow_errors(model, parts, x0, noise, t, cond, weight)
    return unet_errors(model, parts.scheduler, x0, noise, t, cond, parts.prediction_type, weight)


def training_timesteps_and_noise(parts, groups: int, group_size: int, latent_shape: tuple[int, ...],
                                 device: torch.device | str, generator: torch.Generator | None = None,
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The training ``(t, noise)`` of the family of ``parts``, one draw per group shared by its members (layout of
    :func:`sample_shared_timesteps_and_noise`; flow families: :func:`flow_timesteps_and_noise`)."""
    if getattr(parts, "is_flow", False):
        return flow_timesteps_and_noise(parts, groups, group_size, latent_shape, device, generator)
    return sample_shared_timesteps_and_noise(groups, group_size, latent_shape,
                                             int(parts.scheduler.config.num_train_timesteps), device, generator)
