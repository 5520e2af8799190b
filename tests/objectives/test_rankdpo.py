"""RankDPO (Algorithm 2): DCG pair weights and the listwise loss at hand-picked numbers."""

import math

import pytest
import torch

from mmalign.objectives import preference_loss, rankdpo_loss, rankdpo_pair_weights, ranks_descending


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


PHI = [0.0, 1.0, 0.5]  # sample 1 best, then 2, then 0
RHO = [0.2, -0.1, 0.4]  # policy - reference log-ratios; model ranking: 2, 0, 1


def expected_loss(ranks, beta):
    total = 0.0
    for i in range(3):
        for j in range(3):
            if PHI[i] > PHI[j]:
                w = abs(2 ** PHI[i] - 2 ** PHI[j]) * abs(1 / math.log2(1 + ranks[i]) - 1 / math.log2(1 + ranks[j]))
                total += -w * logsig(beta * (RHO[i] - RHO[j]))
    return total


def test_ranks_descending():
    assert ranks_descending(torch.tensor([PHI])).tolist() == [[3, 1, 2]]
    assert ranks_descending(torch.tensor([[1.0, 1.0, 0.0]])).tolist() == [[1, 2, 3]]  # stable ties


def test_pair_weights_closed_form():
    w = rankdpo_pair_weights(torch.tensor([PHI]), torch.tensor([[3, 1, 2]]))[0]
    assert w.shape == (3, 3)
    assert w[1, 0].item() == pytest.approx((2 - 1) * (1 / math.log2(2) - 1 / math.log2(4)))
    assert w[2, 0].item() == pytest.approx((2**0.5 - 1) * (1 / math.log2(3) - 1 / math.log2(4)))
    assert w[1, 2].item() == pytest.approx((2 - 2**0.5) * (1 / math.log2(2) - 1 / math.log2(3)))
    assert w[0, 1].item() == 0.0 and w[0, 0].item() == 0.0  # only pairs with phi_i > phi_j


@pytest.mark.parametrize("rank_source, ranks", [("label", [3, 1, 2]), ("model", [2, 3, 1])])
def test_rankdpo_loss_closed_form(rank_source, ranks):
    ref = torch.tensor([[-5.0, -6.0, -4.0]])
    scores = ref + torch.tensor([RHO])
    losses, metrics = rankdpo_loss(scores, ref, torch.tensor([PHI]), beta=2.0, rank_source=rank_source)
    assert losses.shape == (1,)
    assert losses.item() == pytest.approx(expected_loss(ranks, 2.0), rel=1e-5)
    # ordered pairs (1,0), (2,0), (1,2): implicit rewards agree only for (2,0)
    assert metrics["rewards/accuracies"].item() == pytest.approx(1 / 3)


def test_two_samples_reduce_to_weighted_dpo():
    chosen, rejected = torch.tensor([-3.0]), torch.tensor([-4.0])
    ref_c, ref_r = torch.tensor([-3.5]), torch.tensor([-3.8])
    losses, _ = rankdpo_loss(
        torch.stack([chosen, rejected], 1), torch.stack([ref_c, ref_r], 1), torch.tensor([[0.9, 0.1]]), beta=0.5
    )
    dpo, _ = preference_loss("sigmoid", chosen=chosen, rejected=rejected, ref_chosen=ref_c, ref_rejected=ref_r,
                             beta=0.5)
    weight = (2**0.9 - 2**0.1) * (1 - 1 / math.log2(3))
    assert losses.item() == pytest.approx(weight * dpo.item(), rel=1e-5)


def test_ties_have_zero_weight_and_gradients_flow():
    scores = torch.tensor([[-1.0, -2.0, -1.5], [-2.0, -2.5, -0.5]], requires_grad=True)
    ref = torch.tensor([[-1.2, -1.9, -1.5], [-2.0, -2.0, -1.0]])
    phi = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.2, 0.2]])
    losses, _ = rankdpo_loss(scores, ref, phi, beta=1.0)
    assert losses[1].item() == 0.0  # all tied
    losses.sum().backward()
    assert torch.isfinite(scores.grad).all()
    assert (scores.grad[0, :2] < 0).all() and scores.grad[0, 2] > 0 and (scores.grad[1] == 0).all()


def test_errors():
    with pytest.raises(ValueError, match=r"\[B, k\]"):
        rankdpo_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3), beta=1.0)
    with pytest.raises(ValueError, match="rank_source"):
        rankdpo_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), beta=1.0, rank_source="x")
