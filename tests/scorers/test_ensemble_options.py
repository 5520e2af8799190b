"""Ensemble normalisation and --scorer-arg parsing."""

from __future__ import annotations

import pytest
import torch

from scorers.ensemble import ensemble_scores, normalize_within_prompt
from scorers.options import parse_scorer_args, split_scorer_names


def test_zscore_within_prompt():
    s = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    z = normalize_within_prompt(s, "zscore")
    std = (2 / 3) ** 0.5
    torch.testing.assert_close(z[0], torch.tensor([-1 / std, 0.0, 1 / std], dtype=torch.float64))
    assert torch.equal(z[1], torch.zeros(3, dtype=torch.float64))  # all equal -> 0, not NaN


def test_rank_with_ties():
    r = normalize_within_prompt(torch.tensor([[0.3, 0.1, 0.3, 0.9]]), "rank")
    # ascending: 0.1 (rank 0), 0.3 & 0.3 (ranks 1, 2 -> 1.5), 0.9 (rank 3); divided by K-1 = 3
    torch.testing.assert_close(r, torch.tensor([[1.5 / 3, 0.0, 1.5 / 3, 1.0]], dtype=torch.float64))


def test_ensemble_is_scale_free_mean():
    a = torch.tensor([[20.0, 21.0, 23.0]])  # e.g. HPS-like scale
    b = torch.tensor([[0.9, 0.5, 0.6]])  # e.g. CLIPScore-like scale
    e = ensemble_scores({"a": a, "b": b}, "zscore")
    expected = (normalize_within_prompt(a) + normalize_within_prompt(b)) / 2
    torch.testing.assert_close(e, expected)
    # multiplying one scorer's scale by 100 changes nothing
    torch.testing.assert_close(ensemble_scores({"a": a * 100, "b": b}, "zscore"), e)
    with pytest.raises(ValueError, match="different shapes"):
        ensemble_scores({"a": a, "b": torch.zeros(2, 3)})


def test_scorer_arg_parsing():
    per = parse_scorer_args(["hpsv2", "hpsv2.1", "aesthetic"], [
        "hpsv2.checkpoint=/m/hps.pt", "hpsv2.1.arch={\"embed_dim\": 32}", "device=cpu", "aesthetic.image_size=32",
    ])
    assert per["hpsv2"] == {"checkpoint": "/m/hps.pt", "device": "cpu"}
    assert per["hpsv2.1"] == {"arch": {"embed_dim": 32}, "device": "cpu"}
    assert per["aesthetic"] == {"device": "cpu", "image_size": 32}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_scorer_args(["hpsv2"], ["checkpoint"])
    with pytest.raises(ValueError, match="unknown scorer prefix"):
        parse_scorer_args(["hpsv2"], ["pickscore.checkpoint=x"])
    assert split_scorer_names("hpsv2, pickscore") == ["hpsv2", "pickscore"]
    with pytest.raises(ValueError, match="duplicate"):
        split_scorer_names("hpsv2,hpsv2")
