"""MaPO: margin-aware, reference-free preference loss for diffusion (Hong et al., arXiv 2406.06424).

Code-exact with the official ``mapo-t2i/mapo`` ``utils.compute_loss``:

```
l_w, l_l = element-mean (f_theta(x_t, c, t) - target)^2 of winner / loser      # shared t and noise
g_s(l)   = s*l / (exp(s*l) - 1)                                               # bounded link, g(0) = 1
margin   = g_s(l_w) - g_s(l_l)
L        = mean(l_w) - beta * mean(logsig(T * margin))                        # T = num_train_timesteps
```

``s`` is ``--snr_value`` (0.5), ``beta`` is ``--beta_mapo`` (0.1), ``T`` is the scheduler's
``num_train_timesteps`` (1000). ``mean(l_w)`` is the SFT (likelihood) term on the winner. The per-example loss
returned here is ``sft_weight * l_w - beta * logsig(T * margin)`` (official: ``sft_weight = 1``), whose batch mean
is the official loss. ``g_s`` is evaluated as ``x / expm1(x)`` (same value; equals 1 at ``x = 0`` where the
official expression is 0/0). Inputs are errors (``e >= 0``), not scores; with the package's diffusion score
``S = -e/2``, pass ``e = -2 S``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmalign.objectives.pairwise import Metrics, check_scores


def mapo_link(errors: torch.Tensor, snr_value: float = 0.5) -> torch.Tensor:
    """MaPO's bounded score ``g_s(l) = s l / (exp(s l) - 1)`` in (0, 1], with ``g_s(0) = 1``."""
    x = snr_value * errors
    safe = torch.where(x == 0, torch.ones_like(x), x)
    return torch.where(x == 0, torch.ones_like(x), safe / torch.expm1(safe))


def mapo_loss(
    chosen_error: torch.Tensor,
    rejected_error: torch.Tensor,
    *,
    beta: float = 0.1,
    snr_value: float = 0.5,
    num_train_timesteps: int = 1000,
    sft_weight: float = 1.0,
) -> tuple[torch.Tensor, Metrics]:
    """Per-example MaPO loss ``sft_weight * l_w - beta * logsig(T * (g_s(l_w) - g_s(l_l)))``.

    Args:
        chosen_error, rejected_error: per-sample element-mean denoising errors ``[B]`` of winner and loser.
        beta: ``beta_mapo`` (weight of the margin term against the SFT term; not a DPO temperature).
        snr_value: ``s`` of the link function.
        num_train_timesteps: ``T`` multiplying the margin.
        sft_weight: weight of the winner's denoising error (official: 1).

    Returns:
        ``(losses [B], metrics)``; metrics use the official names (``win_score``, ``lose_score``, ``or_loss``,
        ``model_losses_w``, ``model_losses_l``) plus ``rewards/margins`` (mean ``T * margin``) and
        ``rewards/accuracies`` (fraction with ``g_s(l_w) > g_s(l_l)``).
    """
    chosen_error = check_scores("chosen_error", chosen_error, None)
    rejected_error = check_scores("rejected_error", rejected_error, chosen_error.shape[0])
    win_score = mapo_link(chosen_error, snr_value)
    lose_score = mapo_link(rejected_error, snr_value)
    ratio_losses = beta * F.logsigmoid(num_train_timesteps * (win_score - lose_score))
    losses = sft_weight * chosen_error - ratio_losses
    metrics: Metrics = {
        "win_score": win_score.detach().mean(),
        "lose_score": lose_score.detach().mean(),
        "or_loss": -ratio_losses.detach().mean(),
        "model_losses_w": chosen_error.detach().mean(),
        "model_losses_l": rejected_error.detach().mean(),
        "rewards/margins": (num_train_timesteps * (win_score - lose_score)).detach().mean(),
        "rewards/accuracies": (win_score > lose_score).float().mean(),
    }
    return losses, metrics
