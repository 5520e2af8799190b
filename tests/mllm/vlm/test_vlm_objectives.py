"""mDPO, rDPO and MM-DPO per-sample beta: closed forms on scores computed independently."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmalign.mllm.forward import score_rows
from mmalign.mllm.vlm.batch import VisionPreferenceCollator, mdpo_crop
from mmalign.mllm.vlm.config import VLMMethodConfig
from mmalign.mllm.vlm.methods import MdpoOptions, RdpoOptions
from mmalign.mllm.vlm.objective import preference_step
from mmalign.objectives.dynamic_beta import per_sample_beta


def _scores(policy, batch):
    """rho(y_w|v), rho(y_l|v), rho(y_w|v'), and the policy scores, with adapters on / off (reference)."""
    def all_scores():
        pair, _ = score_rows(policy, batch["pair"], batch["vision"], times=2)
        extra, _ = score_rows(policy, batch["extra"], batch["extra_vision"], times=1)
        return pair.chunk(2) + (extra,)

    with torch.no_grad():
        pw, pl, pe = all_scores()
        with policy.disable_adapter():
            rw, rl, re = all_scores()
    return pw, pl, pe, rw, rl, re


@pytest.fixture
def qwen_policy(make_policy):
    return make_policy("qwen25vl")


def test_mdpo_is_dpo_plus_conditional_plus_anchor(qwen_policy, vlm_rows):
    policy, processor = qwen_policy
    batch = VisionPreferenceCollator(processor, extra="crop", seed=1)(vlm_rows)
    beta, delta = 0.5, 0.2
    with torch.no_grad():
        loss, metrics = preference_step(policy, batch, VLMMethodConfig(name="mdpo", beta=beta, mdpo=MdpoOptions(anchor_delta=delta)))
    pw, pl, pe, rw, rl, re = _scores(policy, batch)
    rho_w, rho_l, rho_e = pw - rw, pl - rl, pe - re
    dpo = -F.logsigmoid(beta * (rho_w - rho_l))
    conditional = -F.logsigmoid(beta * (rho_w - rho_e))
    anchor = -F.logsigmoid(beta * rho_w - delta)
    assert float(loss) == pytest.approx(float((dpo + conditional + anchor).mean()), abs=1e-5)
    assert float(metrics["mdpo/conditional_loss"]) == pytest.approx(float(conditional.mean()), abs=1e-5)
    assert float(metrics["mdpo/anchor_loss"]) == pytest.approx(float(anchor.mean()), abs=1e-5)


def test_mdpo_crop_keeps_size_and_is_reproducible(vlm_rows):
    import random

    image = vlm_rows[0].images[0]
    a, b = (mdpo_crop(image, (0.01, 0.2), random.Random("s")) for _ in range(2))
    assert a.size == image.size and a.tobytes() == b.tobytes()


def test_rdpo_paper_formula_and_noisy_flag(qwen_policy, vlm_rows):
    policy, processor = qwen_policy
    for r in vlm_rows:
        r.extra_image = r.images[0].rotate(90, expand=True)
    batch = VisionPreferenceCollator(processor, extra="row")(vlm_rows)
    beta = 0.3
    with torch.no_grad():
        loss, _ = preference_step(policy, batch, VLMMethodConfig(name="rdpo", beta=beta))
        noisy, _ = preference_step(policy, batch, VLMMethodConfig(name="rdpo", beta=beta, rdpo=RdpoOptions(noisy=True)))
    pw, pl, pe, rw, rl, re = _scores(policy, batch)
    expected = -F.logsigmoid(beta * ((pw - rw) - (pl - rl))) - F.logsigmoid(beta * ((pw - rw) - (pe - re)))
    assert float(loss) == pytest.approx(float(expected.mean()), abs=1e-5)
    assert abs(float(noisy) - float(loss)) > 1e-4  # the reproduction option scores differently


def test_per_sample_beta_closed_forms():
    rewards = {"chosen_reward": torch.tensor([3.0, 1.0, 5.0]), "rejected_reward": torch.tensor([1.0, 2.0, float("nan")])}
    beta = per_sample_beta("per_sample", 0.1, rewards, 3, weight=0.5, k=2.0)
    expected = 0.1 * (1 + 0.5 * (1 - torch.exp(torch.tensor([-4.0, 0.0]))))
    torch.testing.assert_close(beta[:2], expected)
    assert float(beta[2]) == pytest.approx(0.1)  # no reward → plain beta
    ls = per_sample_beta("ls_factor", 0.1, {"ls_factor": torch.tensor([1.0, -50.0])}, 2, weight=0.1)
    torch.testing.assert_close(ls, torch.tensor([0.11, 1e-3]))
    assert per_sample_beta("fixed", 0.1, {}, 2) == 0.1
    with pytest.raises(ValueError, match="chosen_reward"):
        per_sample_beta("per_sample", 0.1, {}, 2)


def test_per_sample_beta_enters_the_dpo_term(qwen_policy, vlm_rows):
    policy, processor = qwen_policy
    vlm_rows[0].rewards = {"chosen_reward": 4.0, "rejected_reward": 1.0}
    vlm_rows[1].rewards = {"chosen_reward": 1.0, "rejected_reward": 1.0}
    batch = VisionPreferenceCollator(processor)(vlm_rows)
    method = VLMMethodConfig(beta=0.1, beta_mode="per_sample", beta_weight=1.0, beta_k=1.0, sft_weight=0.25)
    with torch.no_grad():
        loss, _ = preference_step(policy, batch, method)
        pair, n = score_rows(policy, batch["pair"], batch["vision"], times=2)
        with policy.disable_adapter():
            ref, _ = score_rows(policy, batch["pair"], batch["vision"], times=2)
    pw, pl = pair.chunk(2)
    rw, rl = ref.chunk(2)
    betas = torch.tensor([0.1 * (2 - torch.exp(torch.tensor(-3.0)).item()), 0.1])
    nll = -pw.sum() / n.chunk(2)[0].sum()  # MM-DPO gamma * token-mean NLL of the chosen completions
    expected = (-F.logsigmoid(betas * ((pw - rw) - (pl - rl)))).mean() + 0.25 * nll
    assert float(loss) == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.parametrize("loss_kind", ["sigmoid", "simpo"])
def test_training_moves_the_margin_the_right_way(make_policy, vlm_rows, loss_kind):
    policy, processor = make_policy("qwen2vl", scale=0.0)  # fresh adapter: policy == reference
    batch = VisionPreferenceCollator(processor)(vlm_rows)
    method = VLMMethodConfig(loss_type=loss_kind, beta=0.1 if loss_kind == "sigmoid" else 2.0)
    optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    history = []
    for _ in range(6):
        loss, metrics = preference_step(policy, batch, method)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((float(loss.detach()), float(metrics["rewards/margins"])))
    assert history[-1][0] < history[0][0] - 0.05
    assert history[-1][1] > history[0][1]


def test_batch_implicit_beta_closed_form():
    from mmalign.objectives.dynamic_beta import batch_implicit_beta

    margins = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0])
    beta = batch_implicit_beta(margins, 0.1, 0.1, generator=torch.Generator().manual_seed(0))
    z = (margins - margins.mean()) / margins.std()
    picked = torch.multinomial(torch.exp(-0.5 * z**2), 4, replacement=False, generator=torch.Generator().manual_seed(0))
    assert float(beta) == pytest.approx(0.1 * (1 + 0.1 * float(margins[picked].mean() - margins.mean())), abs=1e-7)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        batch_implicit_beta(torch.tensor([0.3]), 0.1, 0.1)
    same = per_sample_beta("batch_implicit", 0.1, {}, 5, margins=margins)
    assert same.shape == (5,) and torch.all(same == same[0])
