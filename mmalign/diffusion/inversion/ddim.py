"""DDIM inversion and ReNoise inversion of clean latents to a per-sample timestep ``t`` (and DDIM denoising back).

Used by SmPO (ReNoise inversion) and InPO (DDIM inversion with a small stochastic term) to find the trajectory
point ``x_t`` the model itself assigns to a preference image (spec ``diffusion_objectives.md`` §3, §4).

Which levels the steps go through and where the model is queried is the *convention*
(:mod:`mmalign.diffusion.inversion.plan`): ``official`` = diffusers 0.20's ``DDIMInverseScheduler`` as the SmPO /
InPO code ran it (rolled "leading" grid, model queried at the level of its input latent, ending at the next grid
level >= t); ``exact`` = a per-sample grid from the clean latent to exactly ``t``, queried at the target level.
Samples of one batch may have different ``t`` (per-device batch size > 1; the official code supports 1): each
iteration runs the model only on the samples that still have steps left.

One inversion step from level ``a`` (``abar_src``) to level ``b`` (``abar_dst``) with noise estimate ``e``
(DDIM, eta = 0)::

    x0_hat = (z - sqrt(1 - a) e) / sqrt(a)      (official: clamped to clip_sample_range if clip_sample)
    z'     = sqrt(b) x0_hat + sqrt(1 - b) e

* **DDIM inversion** (InPO): ``e = eps(z, tau_q)``; then ``z' += eta * sqrt(Var_DDIM(b, a)) * N(0, I)`` with
  ``Var = (1 - a)/(1 - b) * (1 - b/a)`` (InPO ``train.py`` l.1008-1011: ``noise_scheduler._get_variance(tau +
  T/K, tau)``, ``inversion_eta = 0.1``; with the exact grid zero on the first step, whose ``a`` = 1).
* **ReNoise inversion** (SmPO; Garibi et al. 2024): ``e_0 = eps(z, tau_q)``, ``z_0 = step(z, e_0)``; for
  ``r = 1..R``: ``e_r = eps(z_{r-1}, tau_q)``, ``z_r = step(z, mean(e_0..e_r))``. With ``R = 1`` this is exactly
  the official SmPO loop (``train.py`` l.1003-1022: ``e1``, ``e2`` at the same timestep, ``step(z, (e1 + e2)/2)``).

v-prediction models are inverted through ``eps = sqrt(abar) v + sqrt(1 - abar) x`` at the query level.
Everything runs without gradient; arithmetic in float32, model inputs in the model's dtype.
"""

from __future__ import annotations

from typing import Any

import torch

from mmalign.diffusion.inversion.plan import Step, inversion_plan


def predict_eps(
    unet: Any, z: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor], prediction_type: str,
    abar_t: torch.Tensor,
) -> torch.Tensor:
    """The model's noise estimate at ``(z, t)`` in float32 (v-prediction converted with ``abar_t`` (N,))."""
    dtype = next(unet.parameters()).dtype
    added = None
    if "pooled" in cond:
        added = {"text_embeds": cond["pooled"].to(dtype), "time_ids": cond["time_ids"].to(dtype)}
    out = unet(z.to(dtype), t, encoder_hidden_states=cond["prompt_embeds"].to(dtype),
               added_cond_kwargs=added).sample.float()
    if prediction_type == "epsilon":
        return out
    if prediction_type == "v_prediction":
        a = abar_t.float().view(-1, *[1] * (z.dim() - 1))
        return a.sqrt() * out + (1 - a).sqrt() * z.float()
    raise ValueError(f"inversion supports epsilon and v_prediction models, not '{prediction_type}'")


def ddim_inversion_step(z: torch.Tensor, eps: torch.Tensor, abar_prev: torch.Tensor, abar_next: torch.Tensor,
                        clip: float | None = None) -> torch.Tensor:
    """Deterministic DDIM step from level ``abar_prev`` to ``abar_next`` (either direction); per-sample (N,).
    ``clip``: clamp ``x0_hat`` to ``[-clip, clip]`` (diffusers' ``clip_sample``)."""
    shape = (-1, *[1] * (z.dim() - 1))
    a, b = abar_prev.view(shape).to(z), abar_next.view(shape).to(z)
    x0_hat = (z - (1 - a).sqrt() * eps) / a.sqrt()
    if clip is not None:
        x0_hat = x0_hat.clamp(-clip, clip)
    return b.sqrt() * x0_hat + (1 - b).sqrt() * eps


def ddim_posterior_variance(abar_larger_t: torch.Tensor, abar_smaller_t: torch.Tensor) -> torch.Tensor:
    """``(1 - abar_s)/(1 - abar_t) * (1 - abar_t/abar_s)``: diffusers ``DDIMScheduler._get_variance(t, s)``, t > s."""
    return (1 - abar_smaller_t) / (1 - abar_larger_t) * (1 - abar_larger_t / abar_smaller_t)


def _column(steps: list[Step], field: str, device: torch.device) -> torch.Tensor:
    return torch.tensor([getattr(s, field) for s in steps], dtype=torch.float64, device=device)


@torch.no_grad()
def invert(
    unet: Any, scheduler: Any, x0: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor], *,
    num_steps: int = 10, renoise_iters: int = 0, eta: float = 0.0, prediction_type: str = "epsilon",
    generator: torch.Generator | None = None, convention: str = "official",
) -> torch.Tensor:
    """Invert clean latents ``x0`` (N, C, H, W) to their own timesteps ``t`` (N,) with ``unet``; returns the
    inverted latents (under ``convention="official"`` at the grid level the official loop reaches, see
    :mod:`mmalign.diffusion.inversion.plan`; ``"exact"``: at ``t``).

    ``renoise_iters=0, eta=0``: plain DDIM inversion; ``renoise_iters=R``: ReNoise; ``eta>0``: InPO's stochastic
    term. ``cond``: ``prompt_embeds`` (N, L, D) and, for SDXL, ``pooled`` and ``time_ids``.
    """
    plan = inversion_plan(t, num_steps, scheduler, convention)
    z = x0.detach().float().clone()
    for k in range(plan.iterations):
        active = [i for i, s in enumerate(plan.steps) if k < len(s)]
        steps = [plan.steps[i][k] for i in active]
        idx = torch.tensor(active, device=x0.device)
        sub_cond = {key: v[idx] for key, v in cond.items()}
        tau = torch.tensor([s.query for s in steps], device=x0.device, dtype=torch.long)
        a, b = _column(steps, "src", x0.device), _column(steps, "dst", x0.device)
        q = _column(steps, "query_abar", x0.device)
        z_prev = z[idx]
        eps = predict_eps(unet, z_prev, tau, sub_cond, prediction_type, q)
        z_next = ddim_inversion_step(z_prev, eps, a, b, plan.clip)
        if renoise_iters > 0:
            eps_sum = eps.clone()
            for r in range(1, renoise_iters + 1):
                eps_sum += predict_eps(unet, z_next, tau, sub_cond, prediction_type, q)
                z_next = ddim_inversion_step(z_prev, eps_sum / (r + 1), a, b, plan.clip)
        if eta > 0:
            std = eta * ddim_posterior_variance(b, a).clamp(min=0).sqrt()
            noise = torch.randn(z_next.shape, generator=generator, device=z_next.device, dtype=z_next.dtype)
            z_next = z_next + std.view(-1, *[1] * (z.dim() - 1)).to(z_next) * noise
        z[idx] = z_next
    return z


@torch.no_grad()
def ddim_denoise(
    unet: Any, scheduler: Any, x_t: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor], *,
    num_steps: int = 10, prediction_type: str = "epsilon",
) -> torch.Tensor:
    """Deterministic DDIM sampling from ``x_t`` at ``t`` back to the clean level on the ``exact`` grid of
    :func:`invert` (the model is queried at the current level ``tau_k`` to step to ``tau_{k-1}``, the clean level
    last)."""
    plan = inversion_plan(t, num_steps, scheduler, "exact")
    z = x_t.detach().float().clone()
    for k in range(plan.iterations):
        active = [i for i, s in enumerate(plan.steps) if k < len(s)]
        steps = [plan.steps[i][len(plan.steps[i]) - 1 - k] for i in active]  # walked backwards
        idx = torch.tensor(active, device=x_t.device)
        a, b = _column(steps, "dst", x_t.device), _column(steps, "src", x_t.device)
        tau = torch.tensor([s.query for s in steps], device=x_t.device, dtype=torch.long)
        eps = predict_eps(unet, z[idx], tau, {key: v[idx] for key, v in cond.items()}, prediction_type, a)
        z[idx] = ddim_inversion_step(z[idx], eps, a, b)
    return z


def implied_noise(x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """``eps_hat = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)``: the noise for which the forward formula
    ``sqrt(abar_t) x0 + sqrt(1 - abar_t) eps_hat`` gives ``x_t`` (spec §3, §4)."""
    abar = alphas_cumprod.to(x0.device, torch.float64)[t.to(x0.device)].view(-1, *[1] * (x0.dim() - 1))
    return ((x_t.double() - abar.sqrt() * x0.double()) / (1 - abar).sqrt()).float()
