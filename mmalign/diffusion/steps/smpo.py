"""SmPO-Diffusion step: reward-smoothed Diffusion-DPO on ReNoise-inverted latents.

SmPO (Lu et al., ICML 2025, arXiv 2506.02698; official ``JaydenLyh/SmPO`` ``train.py``, spec §3)::

    r_w, r_l = stored raw scorer rewards of the pair           (mmalign.diffusion.soft_labels; once per data set)
    order:     scorer (official) — the higher-rewarded image is the winner; human — keep the data's labels
    kappa    = gamma (2p - 1),  p = sigmoid(r'_w - r'_l),  r' min-max normalised over the data set
               (mmalign.objectives.smoothed.smpo_kappa); order human: gamma |2p - 1|, since the signed kappa on
               a pair the scorer disagrees with is exactly the scorer-ordered loss (the option would do nothing)
    x_t^*    = ReNoise-invert(x0^*, t) with the current policy (no grad; method.<smpo|inpo>.noise.convention, default official =
               diffusers 0.20's DDIMInverseScheduler as the official code ran it); eps^* the implied noise at t
    L        = -logsig(-(beta/2) kappa ((e_theta^w - e_theta^l) - (e_ref^w - e_ref^l)))
             = preference_loss("sigmoid", ..., beta = beta * kappa)   (per-pair beta)

Needs ``batch["image_keys"]`` (the cached / pixel datasets carry them) to find each pair's rewards.

Logged: the Diffusion-DPO metrics (``implicit_acc`` on the kappa-free DPO logit, in the order trained), ``kappa``
(mean), ``smpo_swapped`` (fraction of pairs whose winner the scorer changed), ``implied_noise_std``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch

from mmalign.diffusion.noise_providers import NoiseProvider
from mmalign.diffusion.soft_labels import SoftLabels
from mmalign.diffusion.step_context import dpo_terms
from mmalign.diffusion.steps.inpo import inverted_pair_errors
from mmalign.objectives.smoothed import smpo_kappa

ORDERS = ("scorer", "human")


@lru_cache(maxsize=4)
def _labels(path: str) -> SoftLabels:
    return SoftLabels.load(path)


def order_and_kappa(labels: SoftLabels, chosen_keys: list[str], rejected_keys: list[str], *, gamma: float,
                    order: str, reward_range: str = "data") -> tuple[torch.Tensor, torch.Tensor]:
    """``(swap [B] bool, kappa [B])``: which pairs to swap so the scorer's winner comes first (``order=scorer``;
    never for ``human``) and the SmPO weight of each pair in the resulting order (rewards normalised with
    ``labels.reward_range(reward_range)``)."""
    if order not in ORDERS:
        raise ValueError(f"config key 'method.smpo.order': '{order}' ({', '.join(ORDERS)})")
    r_c, r_r = labels.rewards(chosen_keys, rejected_keys)
    swap = (r_r > r_c) if order == "scorer" else torch.zeros_like(r_c, dtype=torch.bool)
    r_w, r_l = torch.where(swap, r_r, r_c), torch.where(swap, r_c, r_r)
    lo, hi = labels.reward_range(reward_range)
    kappa = smpo_kappa(r_w, r_l, gamma=gamma, reward_min=lo, reward_max=hi, signed=order == "scorer")
    return swap, kappa


def swap_pairs(tensor: torch.Tensor, swap: torch.Tensor) -> torch.Tensor:
    """Exchange rows ``i`` and ``B + i`` of a ``[w; l]`` tensor where ``swap[i]``."""
    groups = swap.shape[0]
    index = torch.arange(2 * groups)
    flip = torch.nonzero(swap).flatten()
    index[flip], index[flip + groups] = flip + groups, flip
    return tensor[index.to(tensor.device)]


def smpo_step(ctx: Any, policy: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
    """SmPO (``ctx`` is a :class:`mmalign.diffusion.step_context.StepContext`; ``ctx.method.smpo.labels`` is set by
    :func:`mmalign.diffusion.soft_labels.prepare_soft_labels`)."""
    cfg = ctx.method.smpo
    if not cfg.labels:
        raise RuntimeError("SmPO needs soft labels: call mmalign.diffusion.soft_labels.prepare_soft_labels first")
    if "image_keys" not in batch:
        raise ValueError("SmPO needs batch['image_keys'] to look up the soft labels of each pair")
    groups = batch["groups"]
    keys = batch["image_keys"]
    swap, kappa = order_and_kappa(_labels(cfg.labels), keys[:groups], keys[groups:], gamma=cfg.gamma,
                                  order=cfg.order, reward_range=cfg.reward_range)
    x0, cond = ctx.inputs(batch, ctx.device)
    x0 = swap_pairs(x0, swap)
    cond = {k: swap_pairs(v, swap) for k, v in cond.items()}
    provider = NoiseProvider(cfg.noise, "smpo")
    e, e_ref, noise = inverted_pair_errors(ctx, policy, x0, cond, groups, provider)
    losses, metrics = dpo_terms(e, e_ref, ctx.method.beta, beta_scale=kappa.to(e.device))
    metrics.update(implied_noise_std=noise.detach().float().std(), kappa=kappa.mean(),
                   smpo_swapped=swap.float().mean())
    return losses.mean(), metrics
