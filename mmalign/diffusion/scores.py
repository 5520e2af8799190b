"""Per-sample diffusion errors: the score every diffusion preference objective is built on.

``e(x0, c, t, eps) = mean over C,H,W of (f(x_t, c, t) - target)^2`` — element mean, as every official
implementation (spec §0.1); the DPO "score" of an image is ``-0.5 * e`` so that the ordinary DPO loss on scores
is the official Diffusion-DPO loss ``-logsig(-(beta/2) * ((e_w - e_ref_w) - (e_l - e_ref_l)))``.

Targets (spec §0.4):

* ``epsilon``: ``x_t = a x0 + s eps``, target ``eps`` (SD1.5, SDXL);
* ``v_prediction``: same ``x_t``, target ``v = a eps - s x0`` (diffusers ``get_velocity``; SD2.x-768);
* ``flow`` (prepared for rectified-flow models): ``x = (1 - sigma) x0 + sigma eps`` with ``sigma = t / T``,
  target ``eps - x0``, timestep passed as ``sigma * T``.
"""

from __future__ import annotations

from collections.abc import Callable

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
    prediction_type: str, weight: TimestepWeight | None = None,
) -> torch.Tensor:
    """Per-sample errors of ``unet`` on ``x0`` (N, C, H, W) with conditioning ``cond`` (keys ``prompt_embeds``,
    optional ``pooled`` and ``time_ids`` for SDXL), multiplied by the optional weight ``omega(t)``."""
    x_t, target = noisy_input_and_target(scheduler, x0, noise, t, prediction_type)
    timestep = t.float() if prediction_type == "flow" else t
    added = None
    if "pooled" in cond:
        added = {"text_embeds": cond["pooled"], "time_ids": cond["time_ids"]}
    dtype = next(p.dtype for p in _params(unet))
    pred = unet(
        x_t.to(dtype), timestep, encoder_hidden_states=cond["prompt_embeds"].to(dtype),
        added_cond_kwargs=_cast(added, dtype),
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


def model_errors(model, parts, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor],
                 weight: TimestepWeight | None = None) -> torch.Tensor:
    """Per-sample errors of the denoiser ``model`` of the family of ``parts`` (a
    :class:`mmalign.diffusion.adapter.DiffusionParts`): what every method step calls."""
    return unet_errors(model, parts.scheduler, x0, noise, t, cond, parts.prediction_type, weight)


def training_timesteps_and_noise(parts, groups: int, group_size: int, latent_shape: tuple[int, ...],
                                 device: torch.device | str, generator: torch.Generator | None = None,
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The training ``(t, noise)`` of the family of ``parts``, one draw per group shared by its members (layout of
    :func:`sample_shared_timesteps_and_noise`)."""
    return sample_shared_timesteps_and_noise(groups, group_size, latent_shape,
                                             int(parts.scheduler.config.num_train_timesteps), device, generator)
