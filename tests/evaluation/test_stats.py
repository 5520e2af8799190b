"""mmalign.evaluation.stats against hand computations: the 95 % interval, ties, the paired bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmalign.evaluation.stats import (
    Z95,
    compare_scores,
    group_means,
    mean_ci,
    outcomes,
    paired_bootstrap_ci,
    win_counts,
)


def test_mean_ci_one_seed_is_the_textbook_interval():
    x = [1.0, 2.0, 4.0, 7.0]
    mean = 3.5
    sd = math.sqrt(((1 - mean) ** 2 + (2 - mean) ** 2 + (4 - mean) ** 2 + (7 - mean) ** 2) / 3)  # 2.6458
    half = 1.959963984540054 * sd / 2
    got = mean_ci(x)
    assert got["mean"] == pytest.approx(3.5)
    assert got["ci95"] == pytest.approx([3.5 - half, 3.5 + half])  # 0.907 .. 6.093
    assert got["ci95"][0] == pytest.approx(0.907, abs=1e-3)
    assert Z95 == pytest.approx(1.959963984540054)


def test_mean_ci_over_prompts_uses_per_prompt_means():
    # 2 prompts x 2 seeds: per-prompt means 1.5 and 5.5 -> sd = 2*sqrt(2), n = 2
    x, groups = [1.0, 2.0, 5.0, 6.0], [0, 0, 1, 1]
    assert group_means(x, groups).tolist() == [1.5, 5.5]
    got = mean_ci(x, groups)
    half = Z95 * (2 * math.sqrt(2)) / math.sqrt(2)
    assert got["mean"] == 3.5 and got["n"] == 4 and got["n_groups"] == 2
    assert got["ci95"] == pytest.approx([3.5 - half, 3.5 + half])


def test_ties_count_half_and_the_margin_widens_them():
    base = [0.0, 0.5, 0.5, 0.2, 0.9]
    aligned = [0.1, 0.5, 0.4, 0.25, 0.9]
    assert outcomes(base, aligned).tolist() == [1.0, 0.5, 0.0, 1.0, 0.5]
    assert win_counts(base, aligned) == {"win_rate": 3 / 5, "wins": 2, "ties": 2, "losses": 1}
    # margin 0.06: the +0.05 of image 3 becomes a tie
    assert win_counts(base, aligned, tie_margin=0.06) == {"win_rate": (1 + 0.5 * 3) / 5, "wins": 1, "ties": 3,
                                                          "losses": 1}
    with pytest.raises(ValueError, match="tie_margin"):
        outcomes(base, aligned, tie_margin=-1)


def _bootstrap_by_hand(values, groups, n_boot, seed):
    """The resampling written out: draw prompts, collect the images of each drawn prompt, average, percentiles."""
    prompts = sorted(set(groups))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(prompts), size=(n_boot, len(prompts)))
    stats = []
    for row in draws:
        picked = [v for d in row for v, g in zip(values, groups) if g == prompts[d]]
        stats.append(sum(picked) / len(picked))
    return list(np.percentile(stats, [2.5, 97.5]))


def test_paired_bootstrap_equals_the_loop_written_out():
    rng = np.random.default_rng(3)
    values = rng.normal(size=30).tolist()
    groups = [i // 3 for i in range(30)]  # 10 prompts x 3 seeds
    got = paired_bootstrap_ci(values, groups, n_boot=200, seed=5)
    assert got == pytest.approx(_bootstrap_by_hand(values, groups, 200, 5), abs=1e-12)
    assert paired_bootstrap_ci(values, groups, n_boot=200, seed=5) == got  # reproducible


def test_bootstrap_of_constant_outcomes_is_a_point_and_two_prompts_by_hand():
    assert paired_bootstrap_ci([1.0, 1.0, 1.0]) == [1.0, 1.0]
    # two prompts, one win one loss: a draw is (W,W) 1/4, mixed 1/2, (L,L) 1/4 -> 2.5 / 97.5 percentiles 0 and 1
    low, high = paired_bootstrap_ci([1.0, 0.0], n_boot=4000, seed=1)
    assert (low, high) == (0.0, 1.0)


def test_compare_scores_is_paired():
    base = np.array([1.0, 2.0, 3.0, 4.0])
    aligned = base + np.array([0.5, 0.5, -0.5, 0.0])
    got = compare_scores(base, aligned, n_boot=100)
    assert got["win_rate"] == pytest.approx((2 + 0.5) / 4)
    assert (got["wins"], got["ties"], got["losses"]) == (2, 1, 1)
    assert got["gain"]["mean"] == pytest.approx(0.125)
    diffs = aligned - base
    half = Z95 * diffs.std(ddof=1) / 2
    assert got["gain"]["ci95"] == pytest.approx([0.125 - half, 0.125 + half])  # the paired interval
    assert got["gain_standard_error"] == pytest.approx(diffs.std(ddof=1) / 2)
    assert got["base"]["mean"] == 2.5 and got["aligned"]["mean"] == 2.625
    lo, hi = got["win_rate_ci95"]
    assert 0.0 <= lo <= got["win_rate"] <= hi <= 1.0
