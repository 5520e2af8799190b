"""SimPO and ORPO against TRL's own loss functions (``CPOTrainer.cpo_loss``, ``ORPOTrainer.odds_ratio_loss``).

TRL's DPOTrainer has no SimPO/ORPO loss type; they live in ``trl.experimental`` trainers whose loss methods are pure
functions of mean log-probs and a few trainer attributes. They are called unbound here on a namespace holding exactly
the attributes they read (no trainer or model is built), on random mean log-probs.
"""

from types import SimpleNamespace

import pytest
import torch

from mmalign.objectives import preference_loss

pytest.importorskip("trl")
pytestmark = pytest.mark.filterwarnings("ignore:You are importing from 'trl.experimental'")


def mean_logps(seed):
    gen = torch.Generator().manual_seed(seed)
    return -torch.rand(6, generator=gen) * 3 - 0.01, -torch.rand(6, generator=gen) * 3 - 0.01


@pytest.mark.parametrize("label_smoothing", [0.0, 0.15])
def test_simpo_matches_trl_cpo_loss(label_smoothing):
    from trl.experimental.cpo.cpo_trainer import CPOTrainer

    chosen, rejected = mean_logps(0)
    fake_self = SimpleNamespace(
        alpha=0.0, loss_type="simpo", simpo_gamma=0.8, beta=2.0, label_smoothing=label_smoothing,
        accelerator=SimpleNamespace(device=torch.device("cpu")),
    )
    trl_losses, trl_chosen_rewards, trl_rejected_rewards = CPOTrainer.cpo_loss(fake_self, chosen, rejected)
    ours, metrics = preference_loss(
        "simpo", chosen=chosen, rejected=rejected, beta=2.0, gamma=0.8, label_smoothing=label_smoothing
    )
    torch.testing.assert_close(ours, trl_losses, rtol=1e-6, atol=1e-6)
    assert metrics["rewards/chosen"].item() == pytest.approx(trl_chosen_rewards.mean().item(), abs=1e-6)
    assert metrics["rewards/rejected"].item() == pytest.approx(trl_rejected_rewards.mean().item(), abs=1e-6)


def test_orpo_matches_trl_odds_ratio_loss():
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    chosen, rejected = mean_logps(1)
    fake_self = SimpleNamespace(beta=0.1, accelerator=SimpleNamespace(device=torch.device("cpu")))
    trl_losses, _, _, trl_ratio, trl_log_odds = ORPOTrainer.odds_ratio_loss(fake_self, chosen, rejected)
    ours, metrics = preference_loss("orpo", chosen=chosen, rejected=rejected, beta=0.1, orpo_nll=False)
    # TRL's batch loss is nll - losses.mean(): its per-example odds-ratio losses are the negatives of ours
    torch.testing.assert_close(ours, -trl_losses, rtol=1e-6, atol=1e-7)
    assert metrics["log_odds_ratio"].item() == pytest.approx(trl_ratio.item(), abs=1e-6)
    assert metrics["logits"].item() == pytest.approx(trl_log_odds.item(), abs=1e-5)
    with_nll, _ = preference_loss("orpo", chosen=chosen, rejected=rejected, beta=0.1)
    torch.testing.assert_close(with_nll, -chosen - trl_losses, rtol=1e-6, atol=1e-6)


def test_cdpo_matches_trl_label_smoothed_sigmoid():
    """cDPO = the label-smoothed sigmoid of older TRL DPO, still in ``CPOTrainer.cpo_loss`` (``loss_type="sigmoid"``).

    CPO's logits are policy log-prob differences; with zero reference scores ours are the same numbers."""
    from trl.experimental.cpo.cpo_trainer import CPOTrainer

    chosen, rejected = mean_logps(2)
    fake_self = SimpleNamespace(
        alpha=0.0, loss_type="sigmoid", beta=0.7, label_smoothing=0.2,
        accelerator=SimpleNamespace(device=torch.device("cpu")),
    )
    trl_losses, _, _ = CPOTrainer.cpo_loss(fake_self, chosen, rejected)
    zeros = torch.zeros_like(chosen)
    ours, _ = preference_loss(
        "cdpo", chosen=chosen, rejected=rejected, ref_chosen=zeros, ref_rejected=zeros, beta=0.7, label_smoothing=0.2
    )
    torch.testing.assert_close(ours, trl_losses, rtol=1e-6, atol=1e-6)
