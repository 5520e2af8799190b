"""Diffusion-KTO on unpaired images with per-image t and noise; ``kto_loss`` with z0 = clamp(mean(rho), 0) over
the global batch (spec §8.1; jacklishufan/diffusion-kto ``train_kto_sd_v1.5.py``). ``method.kto.beta`` is
Diffusion-KTO's ``beta_dpo`` on ``g = e_ref - e``; with scores ``-e/2`` that is ``beta = 2 * beta_dpo`` for the
core."""

from __future__ import annotations

from typing import Any

import torch

from mmalign import objectives
from mmalign.diffusion.methods import Metrics, StepContext

KTO_CONDITIONAL_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins")
"""kto_loss metrics that exist only when a batch has both labels (the *_sum and count/* ones always exist)."""


def kto_step(ctx: StepContext, policy: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, Metrics]:
    x0, cond = ctx.inputs(batch, ctx.device)
    t, noise = ctx.independent_noise(x0)
    e = ctx.errors(policy, x0, noise, t, cond)
    e_ref = ctx.reference_errors(policy, x0, noise, t, cond)
    score, ref_score = -0.5 * e, -0.5 * e_ref
    options = ctx.options
    losses, metrics = objectives.kto_loss(
        score, ref_score, batch["label"].bool(), beta=2.0 * ctx.options.beta, z0=global_kto_z0(score, ref_score),
        lambda_d=options.lambda_desirable, lambda_u=options.lambda_undesirable,
    )
    # keep only keys present in every batch: the shared loop reduces one metrics vector across ranks
    metrics = {k: v for k, v in metrics.items() if k not in KTO_CONDITIONAL_METRICS}
    metrics.update({"model_mse": e.detach().mean(), "ref_mse": e_ref.mean()})
    return losses.mean(), metrics


def global_kto_z0(score: torch.Tensor, ref_score: torch.Tensor) -> torch.Tensor:
    """Diffusion-KTO reference point over the *global* batch: ``clamp(mean over all ranks of rho, min=0)``, detached
    (official: mean of the gathered batch). Single process: :func:`mmalign.objectives.kto_z0`."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return objectives.kto_z0(score.detach(), ref_score.detach())
    rho = (score - ref_score).detach().float()
    total = torch.stack([rho.sum(), torch.tensor(float(rho.numel()), device=rho.device)])
    dist.all_reduce(total)
    return (total[0] / total[1]).clamp(min=0.0)
