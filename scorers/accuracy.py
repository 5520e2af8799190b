"""Scorer accuracy protocols (spec §8), as pure functions on numbers.

* :func:`hpdv2_ranking_accuracy` — HPSv2 ``evaluation.py::evaluate_rank`` + ``train.py::inversion_score``:
  per prompt, predicted ranks come from sorting the scores (descending; ties broken by position, like
  ``torch.sort``/``sorted`` on equal values), ``1 - #strictly-opposite pairs / C(n,2)`` (pairs tied in the ground
  truth are never inversions, i.e. count as correct), then the **mean over prompts** (macro).
* :func:`imagereward_accuracy` — ImageReward ``test.py::acc``: over all pairs with different GT ranks, correct when
  the scores order them the same way; **GT ties skipped, predicted ties wrong**; **micro** average.
* :func:`pickapic_accuracy` — PickScore ``eval_preference_predictor.py``: per pair, ``p0, p1`` are the softmax
  probabilities; the prediction is a tie if ``|p0 - p1| <= t``; credit 1 if prediction and label agree exactly
  (including tie = tie), 0.5 if exactly one of them is a tie, 0 otherwise. :func:`pickapic_tuned_accuracy`
  picks ``t`` from {0, 0.1, ..., 1} on validation and reports test at that ``t``.
* :func:`unique_pairs_accuracy` — imscore's unified protocol: all unique pairs, GT ties dropped, a pair counts
  when the scores order it strictly the same way (predicted ties are wrong).

Ranks: **lower is better** (as in the HPD v2 and ImageReward test files). Scores: higher is better.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

TIE_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(11))


def _check_lists(scores: Sequence[Sequence[float]], ranks: Sequence[Sequence[float]]) -> None:
    if len(scores) != len(ranks):
        raise ValueError(f"{len(scores)} score lists but {len(ranks)} rank lists")
    for i, (s, r) in enumerate(zip(scores, ranks)):
        if len(s) != len(r):
            raise ValueError(f"prompt {i}: {len(s)} scores but {len(r)} ranks")


def predicted_ranks(scores: Sequence[float]) -> list[int]:
    """0-based rank of each item when sorted by descending score (stable: earlier item first on ties)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    ranks = [0] * len(scores)
    for position, index in enumerate(order):
        ranks[index] = position
    return ranks


def inversion_score(p1: Sequence[float], p2: Sequence[float]) -> float:
    """HPSv2's ``inversion_score``: 1 - (#pairs ordered strictly opposite) / C(n, 2)."""
    if len(p1) != len(p2):
        raise ValueError(f"{len(p1)} vs {len(p2)}")
    n = len(p1)
    if n < 2:
        raise ValueError("a ranking needs at least 2 items")
    count = sum(1 for i in range(n - 1) for j in range(i + 1, n)
                if (p1[i] > p1[j] and p2[i] < p2[j]) or (p1[i] < p1[j] and p2[i] > p2[j]))
    return 1 - count / (n * (n - 1) / 2)


def hpdv2_ranking_accuracy(scores: Sequence[Sequence[float]], gt_ranks: Sequence[Sequence[float]]) -> float:
    """HPD v2 ranking accuracy (macro mean of per-prompt inversion scores)."""
    _check_lists(scores, gt_ranks)
    if not scores:
        raise ValueError("no prompts")
    return sum(inversion_score(predicted_ranks(s), r) for s, r in zip(scores, gt_ranks)) / len(scores)


def imagereward_accuracy(scores: Sequence[Sequence[float]], gt_ranks: Sequence[Sequence[float]]) -> float:
    """ImageReward preference accuracy (micro over pairs with different GT ranks; predicted ties wrong)."""
    _check_lists(scores, gt_ranks)
    correct = total = 0
    for s, r in zip(scores, gt_ranks):
        for i in range(len(s) - 1):
            for j in range(i + 1, len(s)):
                if r[i] == r[j]:
                    continue
                total += 1
                better = i if r[i] < r[j] else j
                worse = j if better == i else i
                correct += int(s[better] > s[worse])
    if total == 0:
        raise ValueError("no pairs with different ground-truth ranks")
    return correct / total


def unique_pairs_accuracy(scores: Sequence[Sequence[float]], gt_ranks: Sequence[Sequence[float]]) -> float:
    """imscore's protocol: all unique pairs, GT ties dropped, strict agreement required (same as ImageReward's)."""
    return imagereward_accuracy(scores, gt_ranks)


def pairwise_probs(score_0: Sequence[float] | torch.Tensor, score_1: Sequence[float] | torch.Tensor,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``softmax([s0, s1])`` per pair (scores already on the logit scale, e.g. PickScore's)."""
    s = torch.stack([torch.as_tensor(score_0, dtype=torch.float64), torch.as_tensor(score_1, dtype=torch.float64)], -1)
    p = torch.softmax(s, dim=-1)
    return p[..., 0], p[..., 1]


def pickapic_accuracy(p0: Sequence[float] | torch.Tensor, p1: Sequence[float] | torch.Tensor,
                      label_0: Sequence[float] | torch.Tensor, threshold: float = 0.0) -> float:
    """Pick-a-Pic pairwise accuracy with ties at tie threshold ``t`` (``label_0`` in {0, 0.5, 1})."""
    p0, p1 = torch.as_tensor(p0, dtype=torch.float64), torch.as_tensor(p1, dtype=torch.float64)
    label = torch.as_tensor(label_0, dtype=torch.float64)
    if not p0.shape == p1.shape == label.shape or p0.ndim != 1 or len(p0) == 0:
        raise ValueError(f"p0, p1, label_0 must be equal-length non-empty 1-d; got {p0.shape}, {p1.shape}, "
                         f"{label.shape}")
    bad = ~((label == 0) | (label == 0.5) | (label == 1))
    if bad.any():
        raise ValueError(f"label_0 must be 0, 0.5 or 1; row {int(bad.nonzero()[0])} is {float(label[bad][0])}")
    pred_tie = (p0 - p1).abs() <= threshold + 1e-12
    gt_tie = label == 0.5
    pred_0 = p0 > p1
    agree = torch.where(gt_tie, pred_tie, ~pred_tie & (pred_0 == (label == 1)))
    one_tie = pred_tie ^ gt_tie
    credit = torch.where(agree, 1.0, torch.where(one_tie, 0.5, 0.0))
    return float(credit.mean())


def pickapic_chance(threshold: float, n_ties: int, n_total: int) -> float:
    """Chance accuracy at threshold ``t``: ``(t + (1-t)/2) * ties/N + 0.5 * non_ties/N`` (spec §8.3)."""
    return (threshold + (1 - threshold) / 2) * n_ties / n_total + 0.5 * (n_total - n_ties) / n_total


@dataclass
class TunedAccuracy:
    threshold: float
    """Tie threshold chosen on validation."""
    validation: float
    """Validation accuracy at that threshold."""
    test: float
    """Test accuracy at that threshold (the reported number)."""


def pickapic_tuned_accuracy(val: tuple, test: tuple, thresholds: Sequence[float] = TIE_THRESHOLDS) -> TunedAccuracy:
    """Choose the tie threshold on ``val = (p0, p1, label_0)`` (first best wins), report ``test`` at it."""
    best_t, best = thresholds[0], -1.0
    for t in thresholds:
        acc = pickapic_accuracy(*val, threshold=t)
        if acc > best:
            best_t, best = t, acc
    return TunedAccuracy(best_t, best, pickapic_accuracy(*test, threshold=best_t))
