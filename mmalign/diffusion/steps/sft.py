"""Diffusion-SFT baseline: the plain denoising loss ``mean(e_w)`` on the preferred image only, independent t and
noise (spec §1, official DiffusionDPO ``--sft``)."""

from __future__ import annotations

from typing import Any

import torch

from mmalign.diffusion.step_context import Metrics, StepContext


def sft_step(ctx: StepContext, policy: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, Metrics]:
    x0, cond = ctx.inputs(batch, ctx.device)
    groups = batch["groups"]
    x0_w, cond_w = x0[:groups], {k: v[:groups] for k, v in cond.items()}
    t, noise = ctx.independent_noise(x0_w)
    e_w = ctx.errors(policy, x0_w, noise, t, cond_w)
    return e_w.mean(), {"model_mse": e_w.detach().mean()}
