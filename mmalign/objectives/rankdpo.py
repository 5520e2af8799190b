"""RankDPO: listwise DPO with DCG gain/discount pair weights (Karthik et al., arXiv 2410.18013, Algorithm 2).

No official code was found (spec/diffusion_objectives.md §7); the formula follows the paper's Algorithm 2. For a
list of ``k`` samples of one condition with preference scores ``phi`` (Syn-Pic: fraction of won comparisons, in
[0, 1]) and log-ratios ``rho_i = S_theta(x^i) - S_ref(x^i)``:

```
for each pair (i, j) with phi_i > phi_j:
    G_ij   = 2^phi_i - 2^phi_j                                     # DCG gain difference
    D(r)   = log2(1 + r)                                           # DCG discount of rank r (1 = best)
    w_ij   = |G_ij| * |1/D(tau_i) - 1/D(tau_j)|                    # LambdaLoss-style |delta DCG| weight
    L_ij   = -w_ij * logsig(beta * (rho_i - rho_j))
L = sum over pairs of L_ij          (per list; the batch loss is the mean over lists)
```

Conventions and what was decided where the paper is open:

* The paper writes ``s_i = ||eps - eps_theta||^2 - ||eps - eps_ref||^2`` and ``logsig(-beta (s_i - s_j))``
  (no 1/2). With this package's diffusion score ``S = -e/2`` we have ``rho_i = -s_i / 2`` (element-mean errors), so
  the paper's ``beta`` is ``beta / 2`` here (a paper beta of ``b`` on element-mean errors → pass ``2 b``).
* The log base of the discount is unspecified in the paper; base 2 (standard DCG) is used. A different base only
  rescales all weights by a constant, which is absorbed into the learning rate.
* Which ranking ``tau`` enters the discount: the paper's figure uses the *current model's* ranking (sorting the
  implicit rewards ``rho``, LambdaLoss behaviour: mis-ranked pairs far apart in the model's ranking get larger
  weight); the OCR'd algorithm text reads as the label ranking (sorting ``phi``). Both are offered
  (``rank_source="model" | "label"``), default ``"model"`` as the spec recommends. Ranks are computed without
  gradient; ties in the sort are broken by list position.
* Ties (``phi_i == phi_j``) give zero weight. With ``k = 2`` the loss is a gain-weighted DPO.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmalign.objectives.pairwise import Metrics


def _check_lists(name: str, value: torch.Tensor, shape: torch.Size | None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dim() != 2:
        raise ValueError(f"{name} must be a tensor of shape [B, k] (k ranked samples per condition)")
    if shape is not None and value.shape != shape:
        raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {tuple(shape)}")
    if value.shape[1] < 2:
        raise ValueError(f"{name} needs at least 2 samples per list, got k={value.shape[1]}")
    return value.to(torch.promote_types(value.dtype, torch.float32))


def ranks_descending(values: torch.Tensor) -> torch.Tensor:
    """Rank of each entry within its row, 1 = largest (ties broken by position, stable sort)."""
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    positions = torch.arange(1, values.shape[1] + 1, device=values.device).expand_as(order)
    ranks.scatter_(1, order, positions)
    return ranks


def rankdpo_pair_weights(preference_scores: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """RankDPO pair weights ``W[b, i, j]`` (shape ``[B, k, k]``), non-zero only where ``phi_i > phi_j``.

    ``W[b, i, j] = |2^phi_i - 2^phi_j| * |1/log2(1 + tau_i) - 1/log2(1 + tau_j)|`` for ``phi_i > phi_j``, else 0.

    Args:
        preference_scores: ``phi`` ``[B, k]`` (higher = preferred; Syn-Pic scores lie in [0, 1]).
        ranks: ``tau`` ``[B, k]``, 1 = best (see :func:`ranks_descending`).
    """
    phi = _check_lists("preference_scores", preference_scores, None)
    tau = _check_lists("ranks", ranks, phi.shape)
    gain = torch.pow(2.0, phi)
    inv_discount = 1.0 / torch.log2(1.0 + tau)
    gain_delta = (gain[:, :, None] - gain[:, None, :]).abs()
    discount_delta = (inv_discount[:, :, None] - inv_discount[:, None, :]).abs()
    ordered = phi[:, :, None] > phi[:, None, :]
    return torch.where(ordered, gain_delta * discount_delta, torch.zeros_like(gain_delta))


def rankdpo_loss(
    scores: torch.Tensor,
    ref_scores: torch.Tensor,
    gains_or_scores: torch.Tensor,
    *,
    beta: float,
    rank_source: str = "model",
) -> tuple[torch.Tensor, Metrics]:
    """Per-list RankDPO loss ``-sum_{phi_i > phi_j} w_ij logsig(beta (rho_i - rho_j))`` (module docstring).

    Args:
        scores, ref_scores: policy / reference scores ``[B, k]`` of the ``k`` samples of each condition.
        gains_or_scores: preference scores ``phi`` ``[B, k]`` (higher = better; the gain is ``2^phi``).
        beta: inverse temperature on log-ratios (paper beta on element-mean errors = ``beta / 2`` here).
        rank_source: ``"model"`` (rank by the current implicit rewards ``rho``, detached) or ``"label"`` (rank by
            ``phi``) for the DCG discount.

    Returns:
        ``(losses [B], metrics)`` with ``rewards/accuracies`` (fraction of ordered pairs whose implicit rewards
        agree with ``phi``), ``rewards/margins`` (mean ``beta (rho_i - rho_j)`` over ordered pairs),
        ``rewards/chosen``/``rewards/rejected`` (mean ``beta rho`` of each list's best / worst sample by ``phi``),
        and ``pair_weight_mean``.
    """
    scores = _check_lists("scores", scores, None)
    ref_scores = _check_lists("ref_scores", ref_scores, scores.shape)
    phi = _check_lists("gains_or_scores", gains_or_scores, scores.shape)
    logratios = scores - ref_scores
    if rank_source == "model":
        ranks = ranks_descending(logratios.detach())
    elif rank_source == "label":
        ranks = ranks_descending(phi)
    else:
        raise ValueError(f"rank_source must be 'model' or 'label', got {rank_source!r}")
    weights = rankdpo_pair_weights(phi, ranks).detach()
    pair_logits = beta * (logratios[:, :, None] - logratios[:, None, :])
    losses = -(weights * F.logsigmoid(pair_logits)).sum(dim=(1, 2))

    ordered = phi[:, :, None] > phi[:, None, :]
    with torch.no_grad():
        rewards = beta * logratios
        best = phi.argmax(dim=1, keepdim=True)
        worst = phi.argmin(dim=1, keepdim=True)
        n_pairs = ordered.sum().clamp(min=1)
        metrics: Metrics = {
            "rewards/chosen": rewards.gather(1, best).mean(),
            "rewards/rejected": rewards.gather(1, worst).mean(),
            "rewards/margins": (pair_logits * ordered).sum() / n_pairs,
            "rewards/accuracies": ((pair_logits > 0) & ordered).sum() / n_pairs,
            "pair_weight_mean": weights.sum() / n_pairs,
        }
    return losses, metrics
