"""Statistics of a base vs aligned evaluation on matched images (same prompt, same seed).

Inputs are per-image scores ``base[i]``, ``aligned[i]`` and ``groups[i]``, the prompt of image ``i`` (images of one
prompt under different seeds are not independent, so the prompt is the resampling unit):

* :func:`mean_ci` — the mean and its 95 % interval ``mean ± z * s / sqrt(P)`` with ``s`` the std (ddof=1) of the
  ``P`` per-prompt means and ``z = 1.959964`` (normal quantile; the sets here have tens to thousands of prompts).
  With one seed per prompt this is the textbook interval over images. The mean itself is the mean over images
  (equal to the mean of per-prompt means when every prompt has the same number of seeds).
* :func:`outcomes` — per image 1 (aligned wins: ``aligned - base > tie_margin``), 0.5 (tie: ``|aligned - base| <=
  tie_margin``) or 0; the win rate is their mean (ties count half, as the toy world's ``compare`` always did).
* :func:`paired_bootstrap_ci` — resample prompts with replacement ``n_boot`` times (the same draw for base and
  aligned: a paired bootstrap), recompute the statistic on the images of the drawn prompts, and take the 2.5 / 97.5
  percentiles (``numpy.percentile``'s linear interpolation) of the resampled values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

Z95 = NormalDist().inv_cdf(0.975)
"""1.959963984540054: the two-sided 95 % normal quantile."""
DEFAULT_BOOTSTRAP = 1000
DEFAULT_BOOTSTRAP_SEED = 0


def _groups(n: int, groups: Sequence[int] | None) -> np.ndarray:
    g = np.arange(n) if groups is None else np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups: expected {n} entries, got {g.shape}")
    return g


def group_means(values: Sequence[float], groups: Sequence[int] | None = None) -> np.ndarray:
    """Mean of ``values`` per group, groups in order of first appearance."""
    v = np.asarray(values, dtype=np.float64)
    g = _groups(len(v), groups)
    _, first, inverse = np.unique(g, return_index=True, return_inverse=True)
    sums = np.bincount(inverse, weights=v)
    counts = np.bincount(inverse)
    return (sums / counts)[np.argsort(first)]


def mean_ci(values: Sequence[float], groups: Sequence[int] | None = None) -> dict[str, Any]:
    """``{"mean", "ci95": [low, high], "std", "n", "n_groups"}`` (module docstring)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        raise ValueError("mean_ci: no values")
    units = group_means(v, groups)
    mean = float(v.mean())
    half = Z95 * float(units.std(ddof=1)) / np.sqrt(len(units)) if len(units) > 1 else 0.0
    return {"mean": mean, "ci95": [mean - half, mean + half], "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "n": int(len(v)), "n_groups": int(len(units))}


def outcomes(base: Sequence[float], aligned: Sequence[float], tie_margin: float = 0.0) -> np.ndarray:
    """Per image: 1.0 aligned wins, 0.5 tie (``|aligned - base| <= tie_margin``), 0.0 base wins."""
    b, a = np.asarray(base, dtype=np.float64), np.asarray(aligned, dtype=np.float64)
    if b.shape != a.shape:
        raise ValueError(f"base and aligned scores differ in shape: {b.shape} vs {a.shape}")
    if tie_margin < 0:
        raise ValueError(f"tie_margin must be >= 0, got {tie_margin}")
    diff = a - b
    return np.where(np.abs(diff) <= tie_margin, 0.5, np.where(diff > 0, 1.0, 0.0))


def win_counts(base: Sequence[float], aligned: Sequence[float], tie_margin: float = 0.0) -> dict[str, Any]:
    """``{"win_rate", "wins", "ties", "losses"}`` of aligned over base (ties count half)."""
    o = outcomes(base, aligned, tie_margin)
    return {"win_rate": float(o.mean()) if len(o) else float("nan"), "wins": int((o == 1.0).sum()),
            "ties": int((o == 0.5).sum()), "losses": int((o == 0.0).sum())}


def paired_bootstrap_ci(per_image: Sequence[float], groups: Sequence[int] | None = None, *,
                        n_boot: int = DEFAULT_BOOTSTRAP, seed: int = DEFAULT_BOOTSTRAP_SEED,
                        statistic: Callable[[np.ndarray, np.ndarray], float] | None = None) -> list[float]:
    """95 % percentile interval of the mean of ``per_image`` (e.g. :func:`outcomes`, or ``aligned - base``) under
    resampling of whole groups (prompts) with replacement; ``numpy.random.default_rng(seed)`` draws
    ``n_boot x n_groups`` group indices at once, so the interval is reproducible.

    The mean over the images of the drawn groups is ``sum_k S[g_k] / sum_k C[g_k]`` with ``S`` / ``C`` the per-group
    sums / counts (the images of a group drawn twice count twice)."""
    v = np.asarray(per_image, dtype=np.float64)
    if len(v) == 0:
        raise ValueError("paired_bootstrap_ci: no values")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    g = _groups(len(v), groups)
    _, inverse = np.unique(g, return_inverse=True)
    sums, counts = np.bincount(inverse, weights=v), np.bincount(inverse).astype(np.float64)
    draws = np.random.default_rng(seed).integers(0, len(sums), size=(n_boot, len(sums)))
    resampled = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return [float(low), float(high)]


def compare_scores(base: Sequence[float], aligned: Sequence[float], groups: Sequence[int] | None = None, *,
                   tie_margin: float = 0.0, n_boot: int = DEFAULT_BOOTSTRAP,
                   seed: int = DEFAULT_BOOTSTRAP_SEED) -> dict[str, Any]:
    """Everything ``eval.json`` reports for one scorer on matched images.

    ``base`` / ``aligned``: :func:`mean_ci` of each; ``gain``: :func:`mean_ci` of ``aligned - base`` (a paired
    interval) plus its bootstrap interval; ``win_rate`` (ties half) with ``win_rate_ci95`` from
    :func:`paired_bootstrap_ci` on the per-image outcomes; ``wins`` / ``ties`` / ``losses``; ``gain_standard_error``
    = ``std(aligned - base, ddof=1) / sqrt(n)`` over images (the toy world's historical number).
    """
    b, a = np.asarray(base, dtype=np.float64), np.asarray(aligned, dtype=np.float64)
    o = outcomes(b, a, tie_margin)
    diff = a - b
    gain = mean_ci(diff, groups)
    gain["bootstrap_ci95"] = paired_bootstrap_ci(diff, groups, n_boot=n_boot, seed=seed)
    return {
        "base": mean_ci(b, groups), "aligned": mean_ci(a, groups), "gain": gain,
        **win_counts(b, a, tie_margin), "win_rate_ci95": paired_bootstrap_ci(o, groups, n_boot=n_boot, seed=seed),
        "gain_standard_error": float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0,
        "tie_margin": tie_margin, "n_boot": n_boot, "bootstrap_seed": seed,
    }
