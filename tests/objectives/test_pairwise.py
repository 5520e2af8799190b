"""preference_loss: closed forms at hand-picked numbers, log 2 at policy == reference, gradients, errors."""

import math

import pytest
import torch

from mmalign.objectives import PREFERENCE_KINDS, REFERENCE_KINDS, preference_loss


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


# Two examples. Log-ratios: rho_w = [1.0, -0.5], rho_l = [-0.5, 0.5] -> h = [1.5, -1.0].
CHOSEN = [-4.0, -7.0]
REJECTED = [-6.0, -5.5]
REF_CHOSEN = [-5.0, -6.5]
REF_REJECTED = [-5.5, -6.0]
CHOSEN_LEN = [4, 7]
REJECTED_LEN = [3, 5]
RHO_W = [1.0, -0.5]
RHO_L = [-0.5, 0.5]
H = [1.5, -1.0]
BETA = 0.5
EPS = 0.2


def t(values, requires_grad=False):
    return torch.tensor(values, dtype=torch.float32, requires_grad=requires_grad)


def run(kind, **kw):
    return preference_loss(
        kind,
        chosen=t(CHOSEN),
        rejected=t(REJECTED),
        ref_chosen=t(REF_CHOSEN),
        ref_rejected=t(REF_REJECTED),
        beta=BETA,
        **kw,
    )


def expected(kind):
    out = []
    for i in range(2):
        z = BETA * H[i]
        if kind == "sigmoid":
            out.append(-logsig(z))
        elif kind == "cdpo":
            out.append(-(1 - EPS) * logsig(z) - EPS * logsig(-z))
        elif kind == "robust":
            out.append((-(1 - EPS) * logsig(z) + EPS * logsig(-z)) / (1 - 2 * EPS))
        elif kind == "hinge":
            out.append(max(0.0, 1 - z))
        elif kind == "ipo":
            h_ipo = RHO_W[i] / CHOSEN_LEN[i] - RHO_L[i] / REJECTED_LEN[i]
            out.append((h_ipo - 1 / (2 * BETA)) ** 2)
        elif kind == "ipo_nolen":
            out.append((H[i] - 1 / (2 * BETA)) ** 2)
        elif kind == "bco_pair":
            out.append(-logsig(BETA * RHO_W[i]) - logsig(-BETA * RHO_L[i]))
    return out


@pytest.mark.parametrize("kind", ["sigmoid", "cdpo", "robust", "hinge", "ipo", "bco_pair"])
def test_reference_kinds_closed_form(kind):
    losses, metrics = run(kind, label_smoothing=EPS, chosen_len=t(CHOSEN_LEN), rejected_len=t(REJECTED_LEN))
    assert losses.shape == (2,)
    assert losses.tolist() == pytest.approx(expected(kind), rel=1e-6, abs=1e-7)
    assert metrics["rewards/chosen"].item() == pytest.approx(BETA * sum(RHO_W) / 2, abs=1e-7)
    assert metrics["rewards/rejected"].item() == pytest.approx(BETA * sum(RHO_L) / 2, abs=1e-7)
    assert metrics["rewards/margins"].item() == pytest.approx(BETA * sum(H) / 2, abs=1e-7)
    assert metrics["rewards/accuracies"].item() == pytest.approx(0.5)  # h > 0 for the first pair only
    assert all(not v.requires_grad and v.dim() == 0 for v in metrics.values())


def test_ipo_without_lengths_uses_raw_margin():
    losses, _ = run("ipo")
    assert losses.tolist() == pytest.approx(expected("ipo_nolen"), rel=1e-6)


def test_hinge_is_zero_beyond_margin():
    losses, _ = preference_loss(
        "hinge", chosen=t([0.0]), rejected=t([-3.0]), ref_chosen=t([0.0]), ref_rejected=t([0.0]), beta=0.5
    )
    assert losses.item() == 0.0  # beta * h = 1.5 > 1


def test_simpo_closed_form():
    gamma = 0.3
    losses, metrics = preference_loss(
        "simpo",
        chosen=t(CHOSEN),
        rejected=t(REJECTED),
        beta=2.0,
        gamma=gamma,
        chosen_len=t(CHOSEN_LEN),
        rejected_len=t(REJECTED_LEN),
        label_smoothing=0.1,
    )
    exp = []
    for i in range(2):
        z = 2.0 * (CHOSEN[i] / CHOSEN_LEN[i] - REJECTED[i] / REJECTED_LEN[i]) - gamma
        exp.append(-(0.9) * logsig(z) - 0.1 * logsig(-z))
    assert losses.tolist() == pytest.approx(exp, rel=1e-6)
    assert metrics["rewards/chosen"].item() == pytest.approx(2.0 * (-1.0 - 1.0) / 2, rel=1e-6)


def test_simpo_without_lengths_takes_mean_scores_as_given():
    losses, _ = preference_loss("simpo", chosen=t([-1.0]), rejected=t([-1.5]), beta=2.0, gamma=0.5)
    assert losses.item() == pytest.approx(-logsig(2.0 * 0.5 - 0.5), rel=1e-6)


def test_orpo_closed_form():
    lam = 0.1
    losses, metrics = preference_loss(
        "orpo", chosen=t(CHOSEN), rejected=t(REJECTED), beta=lam,
        chosen_len=t(CHOSEN_LEN), rejected_len=t(REJECTED_LEN),
    )
    exp = []
    ratios = []
    for i in range(2):
        mw, ml = CHOSEN[i] / CHOSEN_LEN[i], REJECTED[i] / REJECTED_LEN[i]
        log_odds_w = mw - math.log(1 - math.exp(mw))
        log_odds_l = ml - math.log(1 - math.exp(ml))
        ratio = logsig(log_odds_w - log_odds_l)
        ratios.append(ratio)
        exp.append(-mw - lam * ratio)
    assert losses.tolist() == pytest.approx(exp, rel=1e-6)
    assert metrics["log_odds_ratio"].item() == pytest.approx(sum(ratios) / 2, rel=1e-6)
    no_nll, _ = preference_loss("orpo", chosen=t([-0.01]), rejected=t([-20.0]), beta=lam, orpo_nll=False)
    # near p = 1 the odds are huge: log1mexp must stay finite (log(1 - e^-0.01) = log(0.00995...))
    log_odds = (-0.01 - math.log(-math.expm1(-0.01))) - (-20.0 - math.log1p(-math.exp(-20.0)))
    assert no_nll.item() == pytest.approx(-lam * logsig(log_odds), rel=1e-6)


def test_sft_term_token_mean_and_per_example():
    nll = [9.0, 3.0]
    lens = [3, 1]
    base, _ = run("sigmoid")
    losses, metrics = run("sigmoid", chosen_nll=t(nll), chosen_len=t(lens), rejected_len=t(lens), sft_weight=0.5)
    token_mean = sum(nll) / sum(lens)  # TRL `sft`: mean over all chosen tokens of the batch
    assert (losses - base).tolist() == pytest.approx([0.5 * token_mean] * 2, rel=1e-6)
    assert metrics["sft_loss"].item() == pytest.approx(token_mean)
    per_ex, _ = run("sigmoid", chosen_nll=t([1.0, 2.0]), sft_weight=2.0)
    assert (per_ex - base).tolist() == pytest.approx([2.0, 4.0], rel=1e-6)


@pytest.mark.parametrize("kind", ["sigmoid", "cdpo", "robust"])
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_log2_at_policy_equals_reference(kind, eps):
    scores = torch.randn(5) * 10
    other = torch.randn(5) * 10
    losses, metrics = preference_loss(
        kind, chosen=scores, rejected=other, ref_chosen=scores.clone(), ref_rejected=other.clone(),
        beta=0.7, label_smoothing=eps,
    )
    assert torch.allclose(losses, torch.full((5,), math.log(2.0)), atol=1e-6)
    assert metrics["rewards/margins"].item() == 0.0


def test_other_kinds_at_policy_equals_reference():
    s, o = torch.randn(3), torch.randn(3)
    kw = dict(chosen=s, rejected=o, ref_chosen=s.clone(), ref_rejected=o.clone(), beta=0.25)
    assert torch.allclose(preference_loss("bco_pair", **kw)[0], torch.full((3,), 2 * math.log(2.0)))
    assert torch.allclose(preference_loss("hinge", **kw)[0], torch.ones(3))
    assert torch.allclose(preference_loss("ipo", **kw)[0], torch.full((3,), 1 / (4 * 0.25**2)))


def test_diffusion_dpo_is_sigmoid_on_minus_half_errors():
    """Official Diffusion-DPO: -logsig(-beta/2 ((e_w - e_l) - (e_ref_w - e_ref_l))), beta = 5000."""
    g = torch.Generator().manual_seed(0)
    e_w, e_l, r_w, r_l = (0.1 + 0.01 * torch.rand(4, generator=g) for _ in range(4))
    beta = 5000.0
    losses, metrics = preference_loss(
        "sigmoid", chosen=-e_w / 2, rejected=-e_l / 2, ref_chosen=-r_w / 2, ref_rejected=-r_l / 2, beta=beta
    )
    for i in range(4):
        inside = -0.5 * beta * ((e_w[i].item() - e_l[i].item()) - (r_w[i].item() - r_l[i].item()))
        assert losses[i].item() == pytest.approx(-logsig(inside), rel=1e-4, abs=1e-5)
    inside_all = -0.5 * beta * ((e_w - e_l) - (r_w - r_l))
    assert metrics["rewards/accuracies"].item() == pytest.approx((inside_all > 0).float().mean().item())


@pytest.mark.parametrize("kind", PREFERENCE_KINDS)
def test_gradients_flow(kind):
    chosen, rejected = t([-4.0, -7.0], True), t([-6.0, -5.5], True)
    refs = dict(ref_chosen=t(REF_CHOSEN), ref_rejected=t(REF_REJECTED)) if kind in REFERENCE_KINDS else {}
    losses, _ = preference_loss(
        kind, chosen=chosen, rejected=rejected, beta=0.1, label_smoothing=0.1, gamma=0.1,
        chosen_len=t(CHOSEN_LEN), rejected_len=t(REJECTED_LEN), chosen_nll=-chosen, sft_weight=0.3, **refs,
    )
    losses.mean().backward()
    for grad in (chosen.grad, rejected.grad):
        assert grad is not None and torch.isfinite(grad).all() and (grad != 0).all()
    assert (chosen.grad < 0).all()  # raising the chosen score lowers every loss here


def test_bf16_scores_are_upcast():
    losses, _ = preference_loss(
        "sigmoid", chosen=t(CHOSEN).bfloat16(), rejected=t(REJECTED).bfloat16(),
        ref_chosen=t(REF_CHOSEN).bfloat16(), ref_rejected=t(REF_REJECTED).bfloat16(), beta=BETA,
    )
    assert losses.dtype == torch.float32
    assert losses.tolist() == pytest.approx(expected("sigmoid"), rel=1e-6)


@pytest.mark.parametrize("kind", REFERENCE_KINDS)
def test_missing_reference_is_a_clear_error(kind):
    with pytest.raises(ValueError, match="ref_chosen and ref_rejected"):
        preference_loss(kind, chosen=t([0.0]), rejected=t([0.0]), beta=0.1)


def test_bad_inputs_are_clear_errors():
    one = t([0.0])
    with pytest.raises(ValueError, match="Unknown preference loss kind 'dpo'"):
        preference_loss("dpo", chosen=one, rejected=one, ref_chosen=one, ref_rejected=one, beta=0.1)
    with pytest.raises(ValueError, match=r"label_smoothing in \[0, 0.5\)"):
        preference_loss("robust", chosen=one, rejected=one, ref_chosen=one, ref_rejected=one, beta=0.1,
                        label_smoothing=0.5)
    with pytest.raises(ValueError, match="rejected has 2 examples, expected 1"):
        preference_loss("simpo", chosen=one, rejected=t([0.0, 1.0]), beta=0.1)
    with pytest.raises(ValueError, match=r"shape \[B\]"):
        preference_loss("simpo", chosen=torch.zeros(2, 2), rejected=torch.zeros(2, 2), beta=0.1)
    with pytest.raises(ValueError, match="needs chosen_nll"):
        preference_loss("simpo", chosen=one, rejected=one, beta=0.1, sft_weight=1.0)
    with pytest.raises(TypeError, match="unknown options"):
        preference_loss("simpo", chosen=one, rejected=one, beta=0.1, rpo_alpha=1.0)
    with pytest.raises(ValueError, match="both chosen_len and rejected_len"):
        preference_loss("ipo", chosen=one, rejected=one, ref_chosen=one, ref_rejected=one, beta=0.1, chosen_len=one)


@pytest.mark.parametrize("kind", PREFERENCE_KINDS)
def test_per_example_beta_tensor_equals_scalar_beta_per_row(kind):
    betas = [0.3, 1.7]
    refs = dict(ref_chosen=t(REF_CHOSEN), ref_rejected=t(REF_REJECTED)) if kind in REFERENCE_KINDS else {}
    common = dict(chosen_len=t(CHOSEN_LEN), rejected_len=t(REJECTED_LEN), label_smoothing=0.1, gamma=0.2)
    batched, _ = preference_loss(kind, chosen=t(CHOSEN), rejected=t(REJECTED), beta=torch.tensor(betas),
                                 **refs, **common)
    for i, b in enumerate(betas):
        row_refs = {k: v[i : i + 1] for k, v in refs.items()}
        row_common = {k: (v[i : i + 1] if isinstance(v, torch.Tensor) else v) for k, v in common.items()}
        single, _ = preference_loss(kind, chosen=t(CHOSEN)[i : i + 1], rejected=t(REJECTED)[i : i + 1], beta=b,
                                    **row_refs, **row_common)
        assert batched[i].item() == pytest.approx(single.item(), rel=1e-6)
    with pytest.raises(ValueError, match="beta has 3 examples"):
        preference_loss(kind, chosen=t(CHOSEN), rejected=t(REJECTED), beta=torch.ones(3), **refs)


def test_float64_gradcheck_through_every_kind():
    def make(kind):
        refs = dict(ref_chosen=t(REF_CHOSEN).double(), ref_rejected=t(REF_REJECTED).double())
        refs = refs if kind in REFERENCE_KINDS else {}

        def fn(chosen, rejected):
            losses, _ = preference_loss(kind, chosen=chosen, rejected=rejected, beta=0.5, label_smoothing=0.1,
                                        gamma=0.2, chosen_len=t(CHOSEN_LEN), rejected_len=t(REJECTED_LEN), **refs)
            assert losses.dtype == torch.float64
            return losses
        return fn

    for kind in PREFERENCE_KINDS:
        inputs = (t(CHOSEN).double().requires_grad_(), t(REJECTED).double().requires_grad_())
        assert torch.autograd.gradcheck(make(kind), inputs), kind
