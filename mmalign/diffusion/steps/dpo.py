"""Diffusion-DPO (and DCPO, whose batch already carries per-side captions): pairs ``[w; l]``, shared t and noise,
``preference_loss(method.dpo.loss_type)`` on scores ``-e/2`` (spec §1, §6; SalesforceAIResearch/DiffusionDPO
``train.py``; hinge / ipo as the diffusers script's ``--loss_type``: see :mod:`mmalign.diffusion.step_context`;
cdpo / robust with ``method.dpo.label_smoothing``: TRL's label-noise losses)."""

from __future__ import annotations

from typing import Any

import torch

from mmalign.diffusion.step_context import Metrics, StepContext, dpo_terms


def dpo_step(ctx: StepContext, policy: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, Metrics]:
    x0, cond = ctx.inputs(batch, ctx.device)
    t, noise = ctx.shared_noise(x0, batch["groups"], 2)
    e = ctx.errors(policy, x0, noise, t, cond)
    e_ref = ctx.reference_errors(policy, x0, noise, t, cond)
    options = ctx.options
    losses, metrics = dpo_terms(e, e_ref, ctx.method.beta, options.loss_type,
                                label_smoothing=options.label_smoothing)
    return losses.mean(), metrics
