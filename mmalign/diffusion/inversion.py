"""DDIM inversion and ReNoise inversion of clean latents to a per-sample timestep ``t`` (and DDIM denoising back).

Used by SmPO (ReNoise inversion) and InPO (DDIM inversion with a small stochastic term) to find the trajectory
point ``x_t`` the model itself assigns to a preference image (spec ``diffusion_objectives.md`` §3, §4).

Grid (a deliberate, documented difference from the official code). The official SmPO/InPO ``train.py`` uses
diffusers' ``DDIMInverseScheduler`` with a "leading" grid of ``K`` points over ``[0, 1000)`` (first step from a
negative timestep) and stops at the first grid level at or above the sampled ``t``, so the latent sits at a
slightly different noise level than ``t``. Here every sample gets its own grid that starts at the clean latent
(``abar = 1``) and ends **exactly** at its ``t``::

    n_i   = max(1, ceil(K * t_i / T))               # about the official step size T / K
    tau_k = round(k * t_i / n_i),  k = 1..n_i       # integer levels, tau_{n_i} = t_i
    abar(level 0) = 1 (clean x0),  abar(level k) = alphas_cumprod[tau_k]

Samples of one batch may have different ``t`` (per-device batch size > 1; the official code supports 1): each
iteration runs the model only on the samples that still have steps left.

One inversion step from level ``a`` (``abar_prev``) to level ``b`` (``abar_next``) with noise estimate ``e``
(DDIM, eta = 0; the model is queried at the *target* timestep ``tau_k``, as diffusers' ``DDIMInverseScheduler``
and null-text/ReNoise inversion code do)::

    x0_hat = (z - sqrt(1 - a) e) / sqrt(a);   z' = sqrt(b) x0_hat + sqrt(1 - b) e

* **DDIM inversion** (InPO): ``e = eps(z, tau_k)``; then ``z' += eta * sqrt(Var_DDIM(tau_k -> tau_{k-1})) * N(0, I)``
  with ``Var = (1 - a)/(1 - b) * (1 - b/a)`` (diffusers ``DDIMScheduler._get_variance(tau_k, tau_{k-1})``;
  official InPO ``inversion_eta = 0.1``; zero on the first step, which starts from the clean latent).
* **ReNoise inversion** (SmPO; Garibi et al. 2024): ``e_0 = eps(z, tau_k)``, ``z_0 = step(z, e_0)``; for
  ``r = 1..R``: ``e_r = eps(z_{r-1}, tau_k)``, ``z_r = step(z, mean(e_0..e_r))``. With ``R = 1`` this is exactly
  the official SmPO loop (``e1``, ``e2``, ``step(z, (e1 + e2) / 2)``).

v-prediction models are inverted through ``eps = sqrt(abar) v + sqrt(1 - abar) x`` at the query level.
Everything runs without gradient; arithmetic in float32, model inputs in the model's dtype.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def inversion_grid(t: torch.Tensor, num_steps: int, num_train_timesteps: int) -> list[list[int]]:
    """Per-sample integer grids ``[tau_1, ..., tau_n]`` ending exactly at ``t_i`` (see module docstring)."""
    if num_steps < 1:
        raise ValueError(f"number of inversion steps must be >= 1, got {num_steps}")
    grids = []
    for ti in t.tolist():
        ti = int(ti)
        if not 0 <= ti < num_train_timesteps:
            raise ValueError(f"timestep {ti} outside [0, {num_train_timesteps})")
        n = max(1, math.ceil(num_steps * ti / num_train_timesteps))
        grids.append([round(k * ti / n) for k in range(1, n + 1)])
    return grids


def _levels(grids: list[list[int]], step: int) -> tuple[list[int], list[int]]:
    """Indices of samples active at iteration ``step`` and their query timesteps ``tau_{step+1}``."""
    active = [i for i, g in enumerate(grids) if step < len(g)]
    return active, [grids[i][step] for i in active]


def _abar(level_t: int | None, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    return torch.ones((), dtype=torch.float64) if level_t is None else alphas_cumprod[level_t].double()


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


def ddim_inversion_step(z: torch.Tensor, eps: torch.Tensor, abar_prev: torch.Tensor, abar_next: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM step from level ``abar_prev`` to ``abar_next`` (either direction); per-sample (N,)."""
    shape = (-1, *[1] * (z.dim() - 1))
    a, b = abar_prev.view(shape).to(z), abar_next.view(shape).to(z)
    x0_hat = (z - (1 - a).sqrt() * eps) / a.sqrt()
    return b.sqrt() * x0_hat + (1 - b).sqrt() * eps


def ddim_posterior_variance(abar_larger_t: torch.Tensor, abar_smaller_t: torch.Tensor) -> torch.Tensor:
    """``(1 - abar_s)/(1 - abar_t) * (1 - abar_t/abar_s)``: diffusers ``DDIMScheduler._get_variance(t, s)``, t > s."""
    return (1 - abar_smaller_t) / (1 - abar_larger_t) * (1 - abar_larger_t / abar_smaller_t)


@torch.no_grad()
def invert(
    unet: Any, scheduler: Any, x0: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor], *,
    num_steps: int = 10, renoise_iters: int = 0, eta: float = 0.0, prediction_type: str = "epsilon",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Invert clean latents ``x0`` (N, C, H, W) to their own timesteps ``t`` (N,) with ``unet``; returns ``x_t``.

    ``renoise_iters=0, eta=0``: plain DDIM inversion; ``renoise_iters=R``: ReNoise; ``eta>0``: InPO's stochastic
    term. ``cond``: ``prompt_embeds`` (N, L, D) and, for SDXL, ``pooled`` and ``time_ids``.
    """
    alphas = scheduler.alphas_cumprod.to("cpu", torch.float64)
    grids = inversion_grid(t.cpu(), num_steps, int(scheduler.config.num_train_timesteps))
    z = x0.detach().float().clone()
    previous: list[int | None] = [None] * len(grids)
    for step in range(max(len(g) for g in grids)):
        active, taus = _levels(grids, step)
        idx = torch.tensor(active, device=x0.device)
        sub_cond = {k: v[idx] for k, v in cond.items()}
        tau = torch.tensor(taus, device=x0.device, dtype=torch.long)
        a = torch.stack([_abar(previous[i], alphas) for i in active]).to(x0.device)
        b = torch.stack([_abar(taus[j], alphas) for j in range(len(active))]).to(x0.device)
        z_prev = z[idx]
        eps = predict_eps(unet, z_prev, tau, sub_cond, prediction_type, b)
        z_next = ddim_inversion_step(z_prev, eps, a, b)
        if renoise_iters > 0:
            eps_sum = eps.clone()
            for r in range(1, renoise_iters + 1):
                eps_sum += predict_eps(unet, z_next, tau, sub_cond, prediction_type, b)
                z_next = ddim_inversion_step(z_prev, eps_sum / (r + 1), a, b)
        if eta > 0:
            std = eta * ddim_posterior_variance(b, a).clamp(min=0).sqrt()
            noise = torch.randn(z_next.shape, generator=generator, device=z_next.device, dtype=z_next.dtype)
            z_next = z_next + std.view(-1, *[1] * (z.dim() - 1)).to(z_next) * noise
        z[idx] = z_next
        for j, i in enumerate(active):
            previous[i] = taus[j]
    return z


@torch.no_grad()
def ddim_denoise(
    unet: Any, scheduler: Any, x_t: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor], *,
    num_steps: int = 10, prediction_type: str = "epsilon",
) -> torch.Tensor:
    """Deterministic DDIM sampling from ``x_t`` at ``t`` back to the clean level on the same grid as :func:`invert`
    (the model is queried at the current level ``tau_k`` to step to ``tau_{k-1}``, the clean level last)."""
    alphas = scheduler.alphas_cumprod.to("cpu", torch.float64)
    grids = [list(reversed(g)) for g in inversion_grid(t.cpu(), num_steps, int(scheduler.config.num_train_timesteps))]
    z = x_t.detach().float().clone()
    for step in range(max(len(g) for g in grids)):
        active = [i for i, g in enumerate(grids) if step < len(g)]
        idx = torch.tensor(active, device=x_t.device)
        taus = [grids[i][step] for i in active]
        nexts = [grids[i][step + 1] if step + 1 < len(grids[i]) else None for i in active]
        a = torch.stack([_abar(tau, alphas) for tau in taus]).to(x_t.device)
        b = torch.stack([_abar(nxt, alphas) for nxt in nexts]).to(x_t.device)
        tau = torch.tensor(taus, device=x_t.device, dtype=torch.long)
        eps = predict_eps(unet, z[idx], tau, {k: v[idx] for k, v in cond.items()}, prediction_type, a)
        z[idx] = ddim_inversion_step(z[idx], eps, a, b)
    return z


def implied_noise(x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """``eps_hat = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)``: the noise for which the forward formula
    ``sqrt(abar_t) x0 + sqrt(1 - abar_t) eps_hat`` gives ``x_t`` (spec §3, §4)."""
    abar = alphas_cumprod.to(x0.device, torch.float64)[t.to(x0.device)].view(-1, *[1] * (x0.dim() - 1))
    return ((x_t.double() - abar.sqrt() * x0.double()) / (1 - abar).sqrt()).float()
