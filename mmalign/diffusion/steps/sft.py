"""Diffusion-SFT baseline: the plain denoising loss ``mean(e_w)`` on the preferred image only, independent t and
noise (spec §1, official DiffusionDPO ``--sft``).

Flow families with ``method.sft.precondition_outputs`` (diffusers ``train_dreambooth_lora_sd3.py``, its default
``--precondition_outputs 1``, l. "Preconditioning of the model outputs"): the script compares
``model_pred * (-sigma) + x_sigma`` with ``x0``; with ``x_sigma = (1 - sigma) x0 + sigma eps`` that difference is
``sigma * ((eps - x0) - v)``, so its per-sample loss is ``sigma^2`` times the velocity error ``e`` (the script's
``compute_loss_weighting_for_sd3`` weight applies to both, as in ``e``)."""

from __future__ import annotations

from typing import Any

import torch

from mmalign.diffusion.methods import Metrics, StepContext


def sft_step(ctx: StepContext, policy: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, Metrics]:
    x0, cond = ctx.inputs(batch, ctx.device)
    groups = batch["groups"]
    x0_w, cond_w = x0[:groups], {k: v[:groups] for k, v in cond.items()}
    t, noise = ctx.independent_noise(x0_w)
    e_w = ctx.errors(policy, x0_w, noise, t, cond_w)
    metrics = {"model_mse": e_w.detach().mean()}
    if ctx.options.precondition_outputs:
        if ctx.parts.prediction_type != "flow":
            raise ValueError("method.sft.precondition_outputs is for flow-matching models (SD3, FLUX), not "
                             f"prediction_type '{ctx.parts.prediction_type}'")
        sigma = t.float() / ctx.num_train_timesteps
        e_w = e_w * sigma.pow(2)
    return e_w.mean(), metrics
