"""MaPO (official mapo-t2i/mapo utils.compute_loss): closed form, link function, gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

from mmalign.objectives import mapo_link, mapo_loss


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x > -30 else x


def g(s: float, err: float) -> float:
    return 1.0 if err == 0 else s * err / (math.exp(s * err) - 1.0)


def test_link_is_bounded_and_one_at_zero():
    errors = torch.tensor([0.0, 1e-8, 0.1, 2.0, 50.0])
    link = mapo_link(errors, 0.5)
    assert link[0].item() == 1.0
    assert link.tolist() == pytest.approx([g(0.5, e) for e in errors.tolist()], rel=1e-6)
    assert ((link > 0) & (link <= 1)).all() and (link.diff() <= 0).all() and (link[2:].diff() < 0).all()


def test_mapo_closed_form():
    l_w, l_l = [0.10, 0.30, 0.21], [0.102, 0.25, 0.21]
    beta, s, T = 0.1, 0.5, 1000
    losses, metrics = mapo_loss(torch.tensor(l_w), torch.tensor(l_l), beta=beta, snr_value=s, num_train_timesteps=T)
    exp = [lw - beta * logsig(T * (g(s, lw) - g(s, ll))) for lw, ll in zip(l_w, l_l)]
    assert losses.tolist() == pytest.approx(exp, rel=1e-5)
    # the official batch loss: mean(l_w) - mean(beta * logsig(T * margin))
    official = sum(l_w) / 3 - sum(beta * logsig(T * (g(s, a) - g(s, b))) for a, b in zip(l_w, l_l)) / 3
    assert losses.mean().item() == pytest.approx(official, rel=1e-5)
    assert metrics["win_score"].item() == pytest.approx(sum(g(s, e) for e in l_w) / 3, rel=1e-6)
    assert metrics["rewards/accuracies"].item() == pytest.approx(1 / 3)


def test_official_expression_matches_on_random_errors():
    """The official code's expression (written out with torch ops, evaluated in float64 where its exp(x) - 1 does
    not lose digits; in float32 the official form itself is ~1e-5 off because T = 1000 amplifies the cancellation)."""
    gen = torch.Generator().manual_seed(0)
    l_w, l_l = torch.rand(8, generator=gen, dtype=torch.float64), torch.rand(8, generator=gen, dtype=torch.float64)
    log_odds = (0.5 * l_w) / (torch.exp(0.5 * l_w) - 1) - (0.5 * l_l) / (torch.exp(0.5 * l_l) - 1)
    official = l_w.mean() - (0.1 * F.logsigmoid(log_odds * 1000)).mean()
    losses, _ = mapo_loss(l_w.float(), l_l.float())
    assert losses.mean().item() == pytest.approx(official.item(), rel=2e-6)


def test_gradients_flow():
    l_w = torch.tensor([0.1, 0.2], requires_grad=True)
    l_l = torch.tensor([0.15, 0.18], requires_grad=True)
    mapo_loss(l_w, l_l)[0].mean().backward()
    assert torch.isfinite(l_w.grad).all() and (l_w.grad > 0).all()  # lower winner error lowers the loss
    assert torch.isfinite(l_l.grad).all() and (l_l.grad < 0).all()  # higher loser error lowers the loss
