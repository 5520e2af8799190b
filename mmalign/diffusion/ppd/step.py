"""The PPD training step: multi-user Diffusion-DPO with a user-conditioned policy (spec §5).

    L = - E_{user k, (c, x_w, x_l) ~ D_k} logsig( -(beta/2) * [ (e_theta(x_w; c, u_k) - e_ref(x_w; c))
                                                               - (e_theta(x_l; c, u_k) - e_ref(x_l; c)) ] )

``e`` = element-mean denoising error at one ``t`` and one noise shared by winner and loser (Diffusion-DPO,
spec §1); the reference is the base UNet *without* the user branch — the same module called without user tokens
(exactly the base, :mod:`.attention`). Users of a batch are mixed (all users trained jointly). User-embedding
dropout zeroes ``u_k`` of a pair with probability ``user_dropout``. The loss goes through
``mmalign.objectives.preference_loss("sigmoid")`` on scores ``-e/2`` (official Diffusion-DPO form).
"""

from __future__ import annotations

from typing import Any

import torch

from mmalign.diffusion.methods import dpo_terms
from mmalign.diffusion.reference import unwrap
from mmalign.diffusion.scores import unet_errors


def drop_users(user_embeds: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero each row's embedding with probability ``p``."""
    if p <= 0:
        return user_embeds
    keep = torch.rand(user_embeds.shape[0], device=user_embeds.device, generator=generator) >= p
    return user_embeds * keep.view(-1, *[1] * (user_embeds.dim() - 1)).to(user_embeds.dtype)


def ppd_loss(model, scheduler, prediction_type: str, x0: torch.Tensor, cond: dict[str, torch.Tensor],
             user_embeds: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, beta: float,
             autocast=None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Loss and metrics for ``[w; l]`` stacked ``x0`` / ``cond`` / ``t`` / ``noise`` (2B rows) and per-pair user
    embeddings ``(B, S, H)`` (already dropped out)."""
    from contextlib import nullcontext

    autocast = autocast or nullcontext
    users = {"user_embeds": torch.cat([user_embeds, user_embeds])}
    with autocast():  # the shared error path (its casts); the base UNet without user tokens is the reference
        e = unet_errors(model, scheduler, x0, noise, t, cond, prediction_type, model_kwargs=users)
    with torch.no_grad(), autocast():
        e_ref = unet_errors(unwrap(model), scheduler, x0, noise, t, cond, prediction_type)
    losses, metrics = dpo_terms(e, e_ref, beta)
    return losses.mean(), metrics


def ppd_step(ctx, policy, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
    """``step_fn`` body for :mod:`mmalign.diffusion.methods` (``ctx``: its ``StepContext``; ``ctx.method.ppd``)."""
    if batch.get("group_size", 2) != 2:
        raise ValueError("ppd trains on pairs")
    x0, cond = ctx.inputs(batch, ctx.device)
    users = drop_users(batch["user_embeds"].to(ctx.device).float(), ctx.method.ppd.user_dropout)
    t, noise = ctx.shared_noise(x0, batch["groups"], 2)
    loss, metrics = ppd_loss(policy, ctx.parts.scheduler, ctx.parts.prediction_type, x0, cond, users, t, noise,
                             ctx.method.beta, ctx.autocast)
    metrics["users_dropped"] = (users.flatten(1).abs().sum(1) == 0).float().mean()
    return loss, metrics
