"""SmPO's smoothed-preference weight: ``kappa = gamma * (2p - 1)`` from reward-model scores (pure tensor math).

SmPO-Diffusion (Lu et al., ICML 2025, arXiv 2506.02698; official ``JaydenLyh/SmPO`` `` preprocessing.py`` and
``train.py``): smoothing the preference distributions with the reward model's win probability ``p`` multiplies
the DPO implicit-reward difference by ``2 alpha - gamma = gamma (2p - 1)``::

    r'   = (r - r_min) / (r_max - r_min)                 # min-max over the data set (official: PickScore raw
                                                         # cosine on Pick-a-Pic v2, 0.11543526500463486 ..
                                                         # 0.28201571106910706; here computed from the data)
    p    = exp(r'_w) / (exp(r'_w) + exp(r'_l)) = sigmoid(r'_w - r'_l)
    kappa = gamma * (2p - 1)                             # gamma = 10 (paper and code)
    loss = -logsig(kappa * beta * h)                     # h: the DPO margin on scores, see pairwise.py

so SmPO's loss is :func:`mmalign.objectives.preference_loss` ``("sigmoid")`` with the per-example beta
``beta * kappa``. When the winner is chosen by the reward model (official) ``p >= 1/2`` and ``kappa >= 0``.
Evaluated on the human order instead, ``kappa`` is negative where the reward model disagrees, and
``-logsig(kappa beta h)`` equals the loss of the swapped pair with ``|kappa|``: the signed formula always follows the
reward model's order, whatever order it is given. Keeping the human labels therefore needs the unsigned weight
``gamma |2p - 1|`` (the reward model's confidence, not its direction): ``smpo_kappa(..., signed=False)``, used by
``method.smpo.order: human`` (our option; the official code only has the reward model's order).
"""

from __future__ import annotations

import torch


def minmax_normalise(rewards: torch.Tensor, reward_min: float, reward_max: float) -> torch.Tensor:
    """``(r - r_min) / (r_max - r_min)``; raises when the range is empty."""
    if not reward_max > reward_min:
        raise ValueError(f"reward range is empty (min {reward_min}, max {reward_max}); cannot normalise")
    return (rewards.double() - reward_min) / (reward_max - reward_min)


def smoothed_win_probability(reward_chosen: torch.Tensor, reward_rejected: torch.Tensor, *, reward_min: float,
                             reward_max: float) -> torch.Tensor:
    """``p = exp(r'_w) / (exp(r'_w) + exp(r'_l))`` with min-max normalised rewards, shape ``[B]`` (float64)."""
    r_w = minmax_normalise(reward_chosen, reward_min, reward_max)
    r_l = minmax_normalise(reward_rejected, reward_min, reward_max)
    return torch.sigmoid(r_w - r_l)


def smpo_kappa(reward_chosen: torch.Tensor, reward_rejected: torch.Tensor, *, gamma: float, reward_min: float,
               reward_max: float, signed: bool = True) -> torch.Tensor:
    """``kappa = gamma * (2p - 1)`` per pair (``signed=False``: ``gamma * |2p - 1|``), shape ``[B]`` float32
    (computed in float64; see module docstring)."""
    p = smoothed_win_probability(reward_chosen, reward_rejected, reward_min=reward_min, reward_max=reward_max)
    kappa = gamma * (2.0 * p - 1.0)
    return (kappa if signed else kappa.abs()).float()
