"""RankDPO: k ranked images per prompt (member-major layout), one t and one noise shared by the list,
``rankdpo_loss`` on scores ``-e/2`` (spec §7, paper Alg. 2)."""

from __future__ import annotations

from typing import Any

import torch

from mmalign import objectives
from mmalign.diffusion.step_context import Metrics, StepContext


def rankdpo_step(ctx: StepContext, policy: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, Metrics]:
    x0, cond = ctx.inputs(batch, ctx.device)
    groups, k = batch["groups"], batch["group_size"]
    t, noise = ctx.shared_noise(x0, groups, k)
    e = ctx.errors(policy, x0, noise, t, cond)
    e_ref = ctx.reference_errors(policy, x0, noise, t, cond)
    scores, ref_scores = (-0.5 * e).view(k, groups).T, (-0.5 * e_ref).view(k, groups).T
    losses, metrics = objectives.rankdpo_loss(
        scores, ref_scores, batch["scores"].float(), beta=ctx.method.beta, rank_source=ctx.options.rank_source
    )
    metrics.update({"model_mse": e.detach().mean(), "ref_mse": e_ref.mean()})
    return losses.mean(), metrics
