"""MaPO: reference-free, ``mean(e_w) - beta * mean(logsig(T * (g(e_w) - g(e_l))))`` on pairs with shared t and
noise (spec §2; mapo-t2i/mapo ``utils.compute_loss``)."""

from __future__ import annotations

from typing import Any

import torch

from mmalign import objectives
from mmalign.diffusion.methods import Metrics, StepContext, error_metrics


def mapo_step(ctx: StepContext, policy: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, Metrics]:
    x0, cond = ctx.inputs(batch, ctx.device)
    t, noise = ctx.shared_noise(x0, batch["groups"], 2)
    e = ctx.errors(policy, x0, noise, t, cond)
    e_w, e_l = e.chunk(2)
    losses, metrics = objectives.mapo_loss(
        e_w, e_l, beta=ctx.options.beta, snr_value=ctx.options.snr, num_train_timesteps=ctx.num_train_timesteps
    )
    metrics.update(error_metrics(e, None))
    return losses.mean(), metrics
