"""Modality-free, model-free preference objectives on per-example scores (pure functions of tensors).

A score is a summed completion log-prob for language models and ``-e/2`` (minus half the element-mean denoising
error) for diffusion models; see :mod:`mmalign.objectives.pairwise`. Every loss returns ``(losses, metrics)`` with
per-example losses (batch loss = ``losses.mean()``) and detached scalar metrics named as TRL logs them.
"""

from mmalign.objectives.grpo import (
    DPOPairs,
    GroupAdvantages,
    clip_advantages,
    group_advantages,
    grpo_loss,
    online_dpo_pairs,
    ppo_clip_loss,
    sde_mean_kl,
)
from mmalign.objectives.kto import kto_loss, kto_z0
from mmalign.objectives.mapo import mapo_link, mapo_loss
from mmalign.objectives.pairwise import (
    PREFERENCE_KINDS,
    REFERENCE_FREE_KINDS,
    REFERENCE_KINDS,
    log1mexp,
    preference_loss,
    sft_term,
)
from mmalign.objectives.rankdpo import rankdpo_loss, rankdpo_pair_weights, ranks_descending
from mmalign.objectives.rrpo import rrpo_defaults, rrpo_loss, token_kl
from mmalign.objectives.smoothed import smpo_kappa

__all__ = [
    "DPOPairs",
    "GroupAdvantages",
    "PREFERENCE_KINDS",
    "REFERENCE_FREE_KINDS",
    "REFERENCE_KINDS",
    "clip_advantages",
    "group_advantages",
    "grpo_loss",
    "kto_loss",
    "kto_z0",
    "log1mexp",
    "mapo_link",
    "mapo_loss",
    "online_dpo_pairs",
    "ppo_clip_loss",
    "preference_loss",
    "rankdpo_loss",
    "rankdpo_pair_weights",
    "ranks_descending",
    "rrpo_defaults",
    "rrpo_loss",
    "sde_mean_kl",
    "sft_term",
    "smpo_kappa",
    "token_kl",
]
