"""The per-user toy evaluation: win rates and user-weighted judge scores equal independent computations."""

from __future__ import annotations

import torch

from mmalign.diffusion.ppd import UserConditionedUNet
from mmalign.toy.ppd_eval import evaluate_users, sample, user_scores, win_rate


def test_win_rate_counts_ties_half():
    assert win_rate(torch.tensor([1.0, 0.0, 2.0, 0.5]), torch.tensor([0.0, 0.0, 3.0, 0.5])) == (1 + 0.5 + 0 + 0.5) / 4


def test_evaluate_users_matches_independent_scoring():
    from mmalign.testing.tiny_diffusion import tiny_pipeline
    from mmalign.toy.judge import judge_terms

    base, ppd = tiny_pipeline("sd15"), tiny_pipeline("sd15")
    for pipe in (base, ppd):
        pipe.set_progress_bar_config(disable=True)
    model = UserConditionedUNet.build(ppd.unet, (1, 16), init="text")
    g = torch.Generator().manual_seed(0)
    emb = {"0": 3 * torch.randn(1, 16, generator=g), "1": 3 * torch.randn(1, 16, generator=g)}
    users = {0: {"color": 0.7, "shape": 0.1, "position": 0.1, "size": 0.1},
             1: {"color": 0.1, "shape": 0.1, "position": 0.1, "size": 0.7}}
    captions, seeds = ["a small red circle on the left", "a large blue square at the top"], [0, 1]
    result = evaluate_users(base, base, ppd, model, emb, users, captions, seeds, steps=2)
    caps = [c for c in captions for _ in seeds]
    sds = [s * 1_000_003 + i for i in range(len(captions)) for s in seeds]  # one noise per (caption, seed)
    for user, weights in users.items():
        row = result["per_user"][str(user)]
        assert row["dpo_win_vs_base"] == 0.5 and row["dpo"] == row["base"]  # the same pipeline twice
        images = sample(ppd, caps, sds, model=model, user_embeds=emb[str(user)], steps=2)
        terms = judge_terms(images, caps)
        expected = sum(weights[k] * terms[k] for k in terms) / sum(weights.values())
        assert abs(row["ppd"] - float(expected.double().mean())) < 1e-9
        assert abs(float(user_scores(images, caps, weights).mean()) - row["ppd"]) < 1e-12
        assert 0.0 <= row["ppd_win_vs_dpo"] <= 1.0 and "ppd_other_users" in row
    assert result["images_per_user"] == 4
