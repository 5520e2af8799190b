"""Noise providers: where a training step gets ``(noise, x_t)`` for each image at its sampled timestep.

Every provider returns the *noise* ``eps`` and the trajectory point ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``
(``scheduler.add_noise``) at **exactly** the sampled ``t``, so the per-sample error code
(:func:`mmalign.diffusion.scores.unet_errors`, which rebuilds ``x_t`` from ``(x0, eps, t)``) is unchanged whatever
the provider (spec §12.2):

=========  ===================================================================================================
provider   noise
=========  ===================================================================================================
forward    Gaussian, one draw per group shared by its members (Diffusion-DPO; spec §0.6)
ddim       image-specific: DDIM inversion of ``x0`` to ``t`` (+ ``eta`` stochastic term, InPO ``inversion_eta``
           = 0.1), then the implied noise ``(x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)`` (InPO, spec §4)
renoise    image-specific: ReNoise inversion with ``renoise_iters`` re-predictions per step (SmPO, spec §3)
=========  ===================================================================================================

Inversion runs without gradient with the **current policy** (official SmPO/InPO ``train.py`` call ``unet``) or,
with ``inversion_model: reference``, with the reference model. The grid and the query level follow ``convention``
(official: diffusers 0.20 as the SmPO/InPO code ran it; exact: ending exactly at ``t``):
:mod:`mmalign.diffusion.inversion.plan`.
"""

from __future__ import annotations

from typing import Any

import torch

from mmalign.diffusion.inversion.ddim import implied_noise, invert
from mmalign.diffusion.inversion.plan import CONVENTIONS
from mmalign.diffusion.options import NoiseConfig
from mmalign.diffusion.reference import unwrap

PROVIDERS = ("forward", "ddim", "renoise")


def checked(cfg: NoiseConfig, method: str) -> NoiseConfig:
    """``cfg`` validated (raises ``ValueError`` naming the key ``method.<method>.noise.*``)."""
    key = f"method.{method}.noise"
    if cfg.provider not in PROVIDERS:
        raise ValueError(f"config key '{key}.provider': '{cfg.provider}' ({', '.join(PROVIDERS)})")
    if cfg.inversion_model not in ("policy", "reference"):
        raise ValueError(f"config key '{key}.inversion_model': '{cfg.inversion_model}' (policy, reference)")
    if cfg.convention not in CONVENTIONS:
        raise ValueError(f"config key '{key}.convention': '{cfg.convention}' ({', '.join(CONVENTIONS)})")
    if cfg.inversion_steps < 1 or cfg.renoise_iters < 0 or cfg.eta < 0:
        raise ValueError(f"config keys '{key}.*': inversion_steps >= 1, renoise_iters >= 0, eta >= 0")
    return cfg


def forward_noise(x0: torch.Tensor, groups: int, group_size: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """One Gaussian draw per group, repeated member-major (``[w; l]`` share it)."""
    noise = torch.randn((groups, *x0.shape[1:]), device=x0.device, generator=generator)
    return noise.repeat(group_size, *[1] * (x0.dim() - 1))


@torch.no_grad()
def inversion_noise(
    unet: Any, scheduler: Any, x0: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor], *,
    num_steps: int, renoise_iters: int = 0, eta: float = 0.0, prediction_type: str = "epsilon",
    generator: torch.Generator | None = None, convention: str = "official",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(eps_hat, x_t)``: invert ``x0`` with ``unet`` and return the implied noise at ``t`` and the point
    ``scheduler.add_noise(x0, eps_hat, t)`` (equal to the inverted latent up to float rounding). Under the official
    convention the inverted latent sits at a grid level near ``t``; as in the official code (InPO ``train.py``
    l.1012-1014) the implied noise is computed with ``abar_t`` of the sampled ``t``."""
    x_inv = invert(unet, scheduler, x0, t, cond, num_steps=num_steps, renoise_iters=renoise_iters, eta=eta,
                   prediction_type=prediction_type, generator=generator, convention=convention)
    eps_hat = implied_noise(x0.float(), x_inv, t, scheduler.alphas_cumprod)
    return eps_hat, scheduler.add_noise(x0.float(), eps_hat, t.to(x0.device))


class NoiseProvider:
    """``provider(step_ctx, policy, x0, t, cond, groups, group_size) -> noise`` for a method step.

    ``step_ctx`` is a :class:`mmalign.diffusion.step_context.StepContext` (parts, reference provider, autocast).
    """

    def __init__(self, cfg: NoiseConfig, method: str) -> None:
        self.cfg = checked(cfg, method)

    def __call__(self, ctx: Any, policy: Any, x0: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor],
                 groups: int, group_size: int) -> torch.Tensor:
        cfg = self.cfg
        if cfg.provider == "forward":
            return forward_noise(x0, groups, group_size)
        if ctx.parts.prediction_type == "flow":
            raise ValueError("method.*.noise: DDIM/ReNoise inversion needs an epsilon or v_prediction model")
        renoise = cfg.renoise_iters if cfg.provider == "renoise" else 0
        kwargs = dict(num_steps=cfg.inversion_steps, renoise_iters=renoise, eta=cfg.eta,
                      prediction_type=ctx.parts.prediction_type, convention=cfg.convention)
        with torch.no_grad(), ctx.autocast():
            if cfg.inversion_model == "reference":
                with ctx.reference.model(unwrap(policy)) as ref:
                    noise, _ = inversion_noise(unwrap(ref), ctx.parts.scheduler, x0, t, cond, **kwargs)
            else:
                noise, _ = inversion_noise(unwrap(policy), ctx.parts.scheduler, x0, t, cond, **kwargs)
        return noise
