"""The reward object: weighted sums of scorers (scorers.reward)."""

from __future__ import annotations

import pytest
import torch

from mmalign.testing.tiny_scorers import save_tiny_scorer_checkpoints
from scorers import load_scorer
from scorers.ensemble import ensemble_scores
from scorers.reward import Reward, load_reward, parse_reward_spec


@pytest.fixture(scope="module")
def tiny_args(tmp_path_factory):
    return save_tiny_scorer_checkpoints(tmp_path_factory.mktemp("reward_scorers"))


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 40, 40, generator=g)
    prompts = ["a red circle"] * 3 + ["a blue square on the left"] * 3
    return images, prompts


def test_parse_reward_spec():
    assert parse_reward_spec("pickscore:1.0, aesthetic:0.2") == {"pickscore": 1.0, "aesthetic": 0.2}
    assert parse_reward_spec("hpsv2.1") == {"hpsv2.1": 1.0}  # a dot in the name is not a weight
    assert parse_reward_spec("hpsv2.1:0.5") == {"hpsv2.1": 0.5}
    assert parse_reward_spec({"toy": 2}) == {"toy": 2.0}
    assert parse_reward_spec(["toy", "pickscore"]) == {"toy": 1.0, "pickscore": 1.0}
    for bad, match in [("", "at least one"), ("toy:1,toy:2", "given twice"), ("toy:abc", "must be a number"),
                       ({"toy": float("nan")}, "finite"), ({"toy": True}, "finite"), ("toy:0", "every weight"),
                       (":1", "no scorer name")]:
        with pytest.raises(ValueError, match=match):
            parse_reward_spec(bad)


def test_weighted_sum_equals_the_scorers(tiny_args, batch):
    images, prompts = batch
    reward = load_reward("pickscore:1.0,aesthetic:0.2,hpsv2:-0.5",
                         scorer_args={n: tiny_args[n] for n in ("pickscore", "aesthetic", "hpsv2")})
    out = reward(images, prompts)
    singles = {n: load_scorer(n, **tiny_args[n]).score(images, prompts) for n in ("pickscore", "aesthetic", "hpsv2")}
    expected = singles["pickscore"] + 0.2 * singles["aesthetic"] - 0.5 * singles["hpsv2"]
    torch.testing.assert_close(out.total, expected, rtol=1e-6, atol=1e-5)
    assert out.total.dtype == torch.float32 and out.total.shape == (6,)
    for name, values in singles.items():
        torch.testing.assert_close(out.terms[name], values)
    # the prompts matter (text-image scorers): swapping the two groups' prompts changes pickscore's term
    swapped = reward(images, prompts[3:] + prompts[:3])
    assert not torch.allclose(swapped.terms["pickscore"], out.terms["pickscore"])
    torch.testing.assert_close(swapped.terms["aesthetic"], out.terms["aesthetic"])  # aesthetic ignores prompts
    stats = out.stats()
    assert stats["reward/mean"] == pytest.approx(float(expected.mean()), rel=1e-5)
    assert set(stats) >= {"reward/pickscore/mean", "reward/aesthetic/std"}


def test_zscore_with_equal_weights_is_the_label_ensemble(tiny_args, batch):
    images, prompts = batch
    names = ("pickscore", "hpsv2")
    scorers = {n: load_scorer(n, **tiny_args[n]) for n in names}
    reward = Reward(scorers, {n: 1 / len(names) for n in names}, normalize="zscore")
    out = reward(images, prompts, group_size=3)
    per = {n: s.score(images, prompts).view(2, 3) for n, s in scorers.items()}
    torch.testing.assert_close(out.total, ensemble_scores(per, "zscore").view(-1).float())
    # within-group normalisation: every group's total sums to zero
    torch.testing.assert_close(out.total.view(2, 3).sum(1), torch.zeros(2), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="group_size dividing"):
        reward(images, prompts, group_size=4)


def test_combine_of_saved_scores_is_the_label_ensemble():
    """``Reward.combine`` (what ``mmalign label`` writes as ``scores``): with weights 1/2 exactly the ensemble of
    :func:`scorers.ensemble.ensemble_scores` (bit for bit: halving is exact), with 1/3 equal to rounding."""
    g = torch.Generator().manual_seed(3)
    terms = {"a": torch.randn(8, generator=g) * 20 + 25, "b": torch.rand(8, generator=g),
             "c": torch.tensor([1.0, 1.0, 2.0, 0.5, 3.0, 3.0, 3.0, 3.0])}  # ties, and a constant group
    for how in ("zscore", "rank", "none"):
        two = {n: terms[n] for n in ("a", "c")}
        reward = Reward(dict.fromkeys(two), {n: 1 / 2 for n in two}, normalize=how)
        total = reward.combine(two, group_size=4)
        assert total.dtype == torch.float64
        assert torch.equal(total.view(2, 4), ensemble_scores({n: v.view(2, 4) for n, v in two.items()}, how)), how
        reward = Reward(dict.fromkeys(terms), {n: 1 / 3 for n in terms}, normalize=how)
        torch.testing.assert_close(reward.combine(terms, group_size=4).view(2, 4),
                                   ensemble_scores({n: v.view(2, 4) for n, v in terms.items()}, how),
                                   rtol=1e-15, atol=1e-15)
    reward = Reward(dict.fromkeys(terms), {n: 1 / 3 for n in terms}, normalize="zscore")
    with pytest.raises(ValueError, match="are not the scorers"):
        reward.combine({"a": terms["a"]}, group_size=4)
    with pytest.raises(ValueError, match="group_size dividing"):
        reward.combine(terms, group_size=3)


def test_bad_reward_inputs(tiny_args, batch):
    images, prompts = batch
    with pytest.raises(ValueError, match="not in the reward"):
        load_reward("pickscore", checkpoints={"pickscor": "x"})
    with pytest.raises(ValueError, match="6 images but 5 prompts"):
        load_reward("pickscore", scorer_args={"pickscore": tiny_args["pickscore"]})(images, prompts[:5])
    with pytest.raises(ValueError):  # an unknown card fails in load_scorer, naming it
        load_reward("no-such-scorer")
    with pytest.raises(ValueError, match="normalize must be one of"):
        Reward({}, {}, normalize="softmax")
