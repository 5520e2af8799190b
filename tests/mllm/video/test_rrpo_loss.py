"""RRPO loss against an independent float64 computation on fixed logits, incl. the token KL; no NaN on underflow."""

import math

import pytest
import torch

from mmalign.mllm.logprobs import token_logps
from mmalign.objectives.rrpo import rrpo_defaults, rrpo_loss, token_kl


def _independent(pol_logits, ref_logits, labels, mask, phrase, beta, alpha):
    """Per-example RRPO from first principles in float64 Python loops (softmax, explicit sums)."""
    n_pairs = pol_logits.shape[0] // 2
    out = []
    for b in range(n_pairs):
        sides = []
        for row in (b, b + n_pairs):
            s = 0.0
            for t in range(1, labels.shape[1]):
                if mask[row, t] and phrase[row, t] > 0:
                    lp = torch.log_softmax(pol_logits[row, t - 1].double(), -1)[labels[row, t]]
                    lr = torch.log_softmax(ref_logits[row, t - 1].double(), -1)[labels[row, t]]
                    s += float(lp - lr)
            sides.append(s)
        u = beta * (sides[0] - sides[1])
        kl = 0.0
        for t in range(1, labels.shape[1]):
            if mask[b, t]:
                p = torch.softmax(ref_logits[b, t - 1].double(), -1)
                q = torch.softmax(pol_logits[b, t - 1].double(), -1)
                kl += float((p * (p.log() - q.log())).sum())
        out.append(-math.log(1 / (1 + math.exp(-u))) + alpha * kl)
    return torch.tensor(out, dtype=torch.float64)


def _batch(seed=0, pairs=3, length=9, vocab=23):
    g = torch.Generator().manual_seed(seed)
    pol = torch.randn(2 * pairs, length, vocab, generator=g) * 2
    ref = torch.randn(2 * pairs, length, vocab, generator=g) * 2
    labels = torch.randint(0, vocab, (2 * pairs, length), generator=g)
    mask = torch.zeros(2 * pairs, length, dtype=torch.long)
    mask[:, 3:] = 1
    mask[1, 7:] = 0  # a shorter completion
    phrase = torch.zeros_like(mask)
    phrase[:, 4:6] = 1
    phrase[:, 7] = 2
    phrase[0, 8] = 0
    return pol, ref, labels, mask, phrase


def _ours(pol, ref, labels, mask, phrase, beta, alpha, chunk=4):
    lp, scored = token_logps(pol, labels, mask)
    lr, _ = token_logps(ref, labels, mask)
    ph = phrase[:, 1:] * scored
    n = pol.shape[0] // 2
    kl = token_kl(ref[:n, :-1], pol[:n, :-1], scored[:n], chunk_size=chunk)
    return rrpo_loss(
        policy_chosen_logps=lp[:n], policy_rejected_logps=lp[n:], ref_chosen_logps=lr[:n], ref_rejected_logps=lr[n:],
        chosen_phrase_ids=ph[:n], rejected_phrase_ids=ph[n:], chosen_kl=kl, beta=beta, alpha=alpha,
    )


@pytest.mark.parametrize("beta,alpha", [(0.1, 0.01), (0.9, 0.1), (0.5, 0.0)])
def test_matches_independent_computation(beta, alpha):
    pol, ref, labels, mask, phrase = _batch()
    losses, metrics = _ours(pol, ref, labels, mask, phrase, beta, alpha)
    expected = _independent(pol, ref, labels, mask, phrase, beta, alpha)
    torch.testing.assert_close(losses.double(), expected, rtol=1e-5, atol=1e-5)
    assert set(metrics) >= {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "kl/chosen"}


def test_kl_term_is_added_with_alpha_and_chunking_invariant():
    pol, ref, labels, mask, phrase = _batch(seed=1)
    l0, m0 = _ours(pol, ref, labels, mask, phrase, 0.1, 0.0)
    l1, m1 = _ours(pol, ref, labels, mask, phrase, 0.1, 0.05, chunk=1)
    l2, _ = _ours(pol, ref, labels, mask, phrase, 0.1, 0.05, chunk=100)
    assert float(m1["kl/chosen"]) > 0
    torch.testing.assert_close(l1, l2)
    lp, scored = token_logps(pol, labels, mask)
    kl = token_kl(ref[:3, :-1], pol[:3, :-1], scored[:3])
    torch.testing.assert_close(l1 - l0, 0.05 * kl)


def test_kl_is_zero_for_identical_policy_and_sums_inside_one_sigmoid():
    pol, _, labels, mask, phrase = _batch(seed=2)
    losses, metrics = _ours(pol, pol.clone(), labels, mask, phrase, 0.1, 1.0)
    torch.testing.assert_close(losses, torch.full_like(losses, math.log(2)), atol=1e-6, rtol=0)
    assert float(metrics["kl/chosen"]) == pytest.approx(0.0, abs=1e-6)


def test_no_nan_when_reference_probabilities_underflow():
    pol, ref, labels, mask, phrase = _batch(seed=3)
    ref = ref.clone()
    ref[..., :10] = float("-inf")  # exact zeros in p_ref
    ref[..., 10:15] = -1e4  # underflow in exp
    labels = labels.clamp(min=15)
    pol = pol.clone().requires_grad_(True)
    losses, metrics = _ours(pol, ref, labels, mask, phrase, 0.1, 0.05)
    assert torch.isfinite(losses).all() and torch.isfinite(metrics["kl/chosen"])
    losses.mean().backward()
    assert torch.isfinite(pol.grad).all() and pol.grad.abs().sum() > 0
    # what the official `softmax(ref).log()` formulation gives on the same input
    p = torch.softmax(ref[:3, :-1], -1)
    naive = (p * (p.log() - torch.log_softmax(pol[:3, :-1].detach(), -1))).sum(-1)
    assert torch.isnan(naive).any()


def test_zero_phrase_pairs_give_log2_preference_term():
    pol, ref, labels, mask, phrase = _batch(seed=4)
    losses, _ = _ours(pol, ref, labels, mask, torch.zeros_like(phrase), 0.5, 0.0)
    torch.testing.assert_close(losses, torch.full_like(losses, math.log(2)))


def test_per_model_defaults():
    assert rrpo_defaults("llava_video") == {"alpha": 0.01, "beta": 0.1, "lr": 5e-6}
    assert rrpo_defaults("longvu")["beta"] == 0.5 and rrpo_defaults("videochat2")["beta"] == 0.9
    assert rrpo_defaults("qwen25vl") == {"alpha": 0.1, "beta": 0.1, "lr": 5e-6}
