"""Averaged scorer ensembles for labelling synthetic preferences (RankDPO-style, spec §1 "scores only compare
within one prompt").

Scorers live on different scales (HPSv2 ~25, PickScore ~21, CLIPScore ~0.8, aesthetic ~5), so each scorer's
scores are normalised **within the candidates of one prompt** before averaging:

* ``zscore`` (default): ``(s - mean_k s) / std_k s`` over the K candidates (population std; all-equal scores
  give 0) — every scorer gets the same weight in the average whatever its scale;
* ``rank``: the candidate's rank mapped to [0, 1] (0 = worst, 1 = best; ties share their mean rank) — robust
  to outliers;
* ``none``: raw scores (only meaningful for a single scorer or scorers on one scale).

The ensemble score of a candidate is the mean over scorers of its normalised scores.
"""

from __future__ import annotations

import torch

NORMALIZATIONS = ("zscore", "rank", "none")


def normalize_within_prompt(scores: torch.Tensor, how: str = "zscore") -> torch.Tensor:
    """``scores`` ``[P, K]`` (P prompts x K candidates) -> normalised ``[P, K]`` (float64)."""
    if how not in NORMALIZATIONS:
        raise ValueError(f"normalisation must be one of {NORMALIZATIONS}, got {how!r}")
    s = scores.double()
    if s.ndim != 2:
        raise ValueError(f"expected scores [prompts, candidates], got shape {tuple(s.shape)}")
    if how == "none":
        return s
    if how == "zscore":
        std = s.std(dim=1, keepdim=True, unbiased=False)
        centred = s - s.mean(dim=1, keepdim=True)
        return torch.where(std > 0, centred / std.clamp_min(1e-12), torch.zeros_like(s))
    k = s.shape[1]
    less = (s.unsqueeze(2) > s.unsqueeze(1)).sum(-1).double()  # number of candidates scored below
    equal = (s.unsqueeze(2) == s.unsqueeze(1)).sum(-1).double()  # including itself
    mean_rank = less + (equal - 1) / 2
    return mean_rank / max(k - 1, 1)


def ensemble_scores(per_scorer: dict[str, torch.Tensor], how: str = "zscore") -> torch.Tensor:
    """Mean over scorers of within-prompt-normalised scores; each value ``[P, K]``."""
    if not per_scorer:
        raise ValueError("no scorers")
    shapes = {tuple(v.shape) for v in per_scorer.values()}
    if len(shapes) != 1:
        raise ValueError(f"scorers returned different shapes: {shapes}")
    return torch.stack([normalize_within_prompt(v, how) for v in per_scorer.values()]).mean(0)
