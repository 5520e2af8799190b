"""InPO / DDIM-InPO step: Diffusion-DPO on the latents that DDIM inversion assigns to the preference images.

InPO (Lu et al., CVPR 2025, arXiv 2503.18454; official ``JaydenLyh/InPO`` ``train.py``, spec §4)::

    t shared by the pair (human label orders w/l; ties removed by the data reader)
    x_t^* = DDIM-invert(x0^*, t) with the current policy, no grad, + 0.1 * sqrt(Var_DDIM) * N(0, I) per step
    eps^* = (x_t^* - sqrt(abar_t) x0^*) / sqrt(1 - abar_t)          # image-specific implied noise
    e_{theta/ref}^* = mean (eps_{theta/ref}(x_t^*, t, c) - eps^*)^2
    L = -logsig(-(beta/2) ((e_theta^w - e_theta^l) - (e_ref^w - e_ref^l)))

i.e. :func:`mmalign.objectives.preference_loss` ``("sigmoid")`` on scores ``-e/2`` — exactly the Diffusion-DPO step
with the forward noise replaced by the ``ddim`` noise provider (:mod:`mmalign.diffusion.noise_providers`).
The inversion follows ``method.<smpo|inpo>.noise.convention`` (default ``official``: diffusers 0.20's ``DDIMInverseScheduler``
grid and query level, as the official code ran; ``exact``: a grid ending exactly at ``t``;
:mod:`mmalign.diffusion.inversion.plan`). Difference from the official code: any per-device batch size works, each
pair with its own ``t`` (official: 1).

Logged: the Diffusion-DPO metrics (``implicit_acc``, ``model_mse``, ``ref_mse``, ``e_w`` ...) plus
``implied_noise_std`` (the std of the inversion-derived noise; 1 for Gaussian noise).
"""

from __future__ import annotations

from typing import Any

import torch

from mmalign.diffusion.noise_providers import NoiseProvider
from mmalign.diffusion.step_context import dpo_terms


def inverted_pair_errors(ctx: Any, policy: Any, x0: torch.Tensor, cond: dict[str, torch.Tensor], groups: int,
                         provider: NoiseProvider) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(e, e_ref, noise)`` for a ``[w; l]`` batch: one ``t`` per pair, noise from ``provider``."""
    t, _ = ctx.shared_noise(x0, groups, 2)
    noise = provider(ctx, policy, x0, t, cond, groups, 2)
    e = ctx.errors(policy, x0, noise, t, cond)
    e_ref = ctx.reference_errors(policy, x0, noise, t, cond)
    return e, e_ref, noise


def inpo_step(ctx: Any, policy: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
    """InPO: DPO with DDIM-inversion noise (``ctx`` is a :class:`mmalign.diffusion.step_context.StepContext`)."""
    x0, cond = ctx.inputs(batch, ctx.device)
    provider = NoiseProvider(ctx.options.noise, "inpo")
    e, e_ref, noise = inverted_pair_errors(ctx, policy, x0, cond, batch["groups"], provider)
    losses, metrics = dpo_terms(e, e_ref, ctx.method.beta)
    metrics["implied_noise_std"] = noise.detach().float().std()
    return losses.mean(), metrics
