"""KTO: closed forms, the z0 reference point (TRL mismatched pairs; Diffusion-KTO matched), gradients, errors."""

import math

import pytest
import torch

from mmalign.objectives import kto_loss, kto_z0


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


POLICY = [-3.0, -5.0, -2.0, -4.0]
REFERENCE = [-4.0, -4.5, -2.5, -3.0]  # rho = [1.0, -0.5, 0.5, -1.0]
RHO = [1.0, -0.5, 0.5, -1.0]
DESIRABLE = [True, False, True, False]
KL_POLICY = [-6.0, -7.0, -5.0, -8.0]
KL_REFERENCE = [-6.4, -7.2, -5.1, -8.3]  # differences 0.4, 0.2, 0.1, 0.3 -> z0 = 0.25


def t(values, requires_grad=False):
    return torch.tensor(values, dtype=torch.float32, requires_grad=requires_grad)


def test_z0_is_clamped_detached_mean_of_mismatched_log_ratios():
    kl_policy = t(KL_POLICY, requires_grad=True)
    z0 = kto_z0(kl_policy, t(KL_REFERENCE))
    assert z0.item() == pytest.approx(0.25, rel=1e-5)
    assert not z0.requires_grad
    assert kto_z0(t([-1.0, -2.0]), t([-0.5, -1.0])).item() == 0.0  # mean -0.75 clamps at 0


def test_kto_closed_form():
    beta, lam_d, lam_u, z0 = 0.5, 1.0, 1.3, 0.25
    losses, metrics = kto_loss(
        t(POLICY), t(REFERENCE), torch.tensor(DESIRABLE), beta=beta,
        kl_policy=t(KL_POLICY), kl_reference=t(KL_REFERENCE), lambda_d=lam_d, lambda_u=lam_u,
    )
    exp = [
        lam_d * (1 - sig(beta * (rho - z0))) if d else lam_u * (1 - sig(beta * (z0 - rho)))
        for rho, d in zip(RHO, DESIRABLE)
    ]
    assert losses.tolist() == pytest.approx(exp, rel=1e-5)  # per-example order is kept
    assert metrics["kl"].item() == pytest.approx(z0, rel=1e-5)
    assert metrics["rewards/chosen"].item() == pytest.approx(beta * (1.0 + 0.5) / 2)
    assert metrics["rewards/rejected"].item() == pytest.approx(beta * (-0.5 - 1.0) / 2)
    assert metrics["rewards/margins"].item() == pytest.approx(beta * 1.5)
    assert metrics["count/chosen"].item() == 2 and metrics["count/rejected"].item() == 2


def test_explicit_z0_takes_precedence_and_single_group_metrics():
    losses, metrics = kto_loss(
        t([-1.0]), t([-1.0]), torch.tensor([True]), beta=0.1, z0=0.0,
        kl_policy=t([5.0]), kl_reference=t([0.0]),
    )
    assert losses.item() == pytest.approx(0.5)  # 1 - sigmoid(0)
    assert "rewards/rejected" not in metrics and "rewards/margins" not in metrics


def test_diffusion_kto_official_form():
    """Diffusion-KTO: g = e_ref - e_theta, z0 = clamp(mean(g), 0), loss = 1 - sigmoid(y beta_d (g - z0))."""
    e_theta = [0.20, 0.31, 0.12, 0.40]
    e_ref = [0.25, 0.30, 0.15, 0.38]
    y = [1, -1, 1, -1]
    beta_d = 1000.0
    g = [r - e for r, e in zip(e_ref, e_theta)]
    z0_g = max(0.0, sum(g) / len(g))
    exp = [1 - sig(yi * beta_d * (gi - z0_g)) for gi, yi in zip(g, y)]
    policy, reference = -t(e_theta) / 2, -t(e_ref) / 2  # package diffusion score S = -e/2
    losses, _ = kto_loss(
        policy, reference, torch.tensor([v > 0 for v in y]), beta=2 * beta_d,
        kl_policy=policy, kl_reference=reference,
    )
    assert losses.tolist() == pytest.approx(exp, rel=1e-4, abs=1e-6)


def test_gradients_flow_to_policy_only_through_rho():
    policy = t(POLICY, requires_grad=True)
    kl_policy = t(KL_POLICY, requires_grad=True)
    losses, _ = kto_loss(
        policy, t(REFERENCE), torch.tensor(DESIRABLE), beta=0.5, kl_policy=kl_policy, kl_reference=t(KL_REFERENCE)
    )
    losses.sum().backward()
    assert torch.isfinite(policy.grad).all() and (policy.grad != 0).all()
    assert (policy.grad[[0, 2]] < 0).all() and (policy.grad[[1, 3]] > 0).all()  # raise desirable, lower undesirable
    assert kl_policy.grad is None  # z0 is detached


def test_errors():
    with pytest.raises(ValueError, match="reference point"):
        kto_loss(t([0.0, 1.0]), t([0.0, 0.0]), torch.tensor([True, False]), beta=0.1)
    with pytest.raises(ValueError, match=r"desirable must be a bool tensor of shape \[2\]"):
        kto_loss(t([0.0, 1.0]), t([0.0, 0.0]), torch.tensor([True]), beta=0.1, z0=0.0)
