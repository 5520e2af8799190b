"""On a fixed batch the Diffusion-DPO step equals an independent computation of the official formula.

Official (SalesforceAIResearch/DiffusionDPO train.py): shared t and noise for winner and loser, element-mean MSE
against the eps (or v) target, ``loss = -logsig(-beta/2 * ((e_w - e_l) - (e_ref_w - e_ref_l)))``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmalign.diffusion.config import MethodConfig
from mmalign.diffusion.registry import DpoOptions, KtoOptions, MapoOptions
from mmalign.diffusion.scores import per_sample_error, sample_shared_timesteps_and_noise
from mmalign.diffusion.steps.dpo import dpo_step
from mmalign.diffusion.steps.kto import kto_step
from mmalign.diffusion.steps.mapo import mapo_step
from tests.helpers import lora_step_setup

B = 2


def _setup(model_dir: str, method: MethodConfig, perturb: bool = True):
    return lora_step_setup(model_dir, method, pairs=B, perturb=perturb)


def _official_errors(unet, scheduler, x0, cond, t, noise, prediction_type):
    abar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    target = noise if prediction_type == "epsilon" else abar.sqrt() * noise - (1 - abar).sqrt() * x0
    pred = unet(x_t, t, encoder_hidden_states=cond).sample
    return ((pred - target) ** 2).mean(dim=(1, 2, 3))


@pytest.mark.parametrize("kind,loss_type", [("sd15", "sigmoid"), ("sd2v", "sigmoid"), ("sd15", "hinge"),
                                            ("sd2v", "ipo")])
def test_dpo_loss_matches_official_formula(tiny_model_dirs, kind, loss_type):
    beta = 100.0 if loss_type == "hinge" else 5000.0  # keep the hinge inside its linear part
    parts, ctx, batch = _setup(tiny_model_dirs[kind], MethodConfig(name="dpo", beta=beta, dpo=DpoOptions(loss_type=loss_type)))
    assert parts.prediction_type == {"sd15": "epsilon", "sd2v": "v_prediction"}[kind]
    torch.manual_seed(123)
    loss, metrics = dpo_step(ctx, parts.unet, batch)

    torch.manual_seed(123)  # same draws as the step: one t and one noise per pair, then repeated
    t = torch.randint(0, 1000, (B,))
    noise = torch.randn(B, 4, 16, 16)
    t2, noise2 = t.repeat(2), noise.repeat(2, 1, 1, 1)
    x0, cond = batch["latent_mean"], batch["prompt_embeds"]
    with torch.no_grad():
        e = _official_errors(parts.unet, parts.scheduler, x0, cond, t2, noise2, parts.prediction_type)
        parts.unet.disable_adapters()
        e_ref = _official_errors(parts.unet, parts.scheduler, x0, cond, t2, noise2, parts.prediction_type)
        parts.unet.enable_adapters()
    (e_w, e_l), (r_w, r_l) = e.chunk(2), e_ref.chunk(2)
    inside = -beta / 2 * ((e_w - e_l) - (r_w - r_l))
    official = {  # official sigmoid; diffusers --loss_type hinge / ipo on the same logits (spec §1)
        "sigmoid": -F.logsigmoid(inside),
        "hinge": torch.relu(1 - inside),
        "ipo": (inside / beta - 1 / (2 * beta)) ** 2,
    }[loss_type].mean()
    assert (e - e_ref).abs().max() > 1e-6, "policy and reference must differ for a meaningful check"
    assert 0.0 < float(official) and float(official) != pytest.approx(math.log(2), abs=1e-4)
    torch.testing.assert_close(loss.detach(), official, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(metrics["model_mse"], e.mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(metrics["ref_mse"], e_ref.mean(), rtol=1e-5, atol=1e-6)
    assert float(metrics["implicit_acc"]) == pytest.approx(float((inside > 0).float().mean()))
    # adapters are enabled again after the reference pass
    assert all(p.requires_grad for n, p in parts.unet.named_parameters() if "lora_" in n)


def test_dpo_at_init_is_log2_and_gradient_flows(tiny_model_dirs):
    parts, ctx, batch = _setup(tiny_model_dirs["sd15"], MethodConfig(name="dpo"), perturb=False)
    torch.manual_seed(0)
    loss, _ = dpo_step(ctx, parts.unet, batch)
    assert float(loss) == pytest.approx(math.log(2), abs=1e-6)
    loss.backward()
    grads = [p.grad for n, p in parts.unet.named_parameters() if "lora_B" in n]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)


def test_mapo_step_matches_official_expression(tiny_model_dirs):
    parts, ctx, batch = _setup(tiny_model_dirs["sd15"], MethodConfig(name="mapo", mapo=MapoOptions(beta=0.1, snr=0.5)))
    torch.manual_seed(5)
    loss, metrics = mapo_step(ctx, parts.unet, batch)
    torch.manual_seed(5)
    t, noise = sample_shared_timesteps_and_noise(B, 2, (4, 16, 16), 1000, "cpu")
    with torch.no_grad():
        e = _official_errors(parts.unet, parts.scheduler, batch["latent_mean"], batch["prompt_embeds"], t, noise,
                             "epsilon")
    e_w, e_l = e.chunk(2)

    def g(v):
        return 0.5 * v / (torch.exp(0.5 * v) - 1)

    official = e_w.mean() - 0.1 * F.logsigmoid(1000 * (g(e_w) - g(e_l))).mean()
    torch.testing.assert_close(loss.detach(), official, rtol=1e-4, atol=1e-6)


def test_kto_step_matches_diffusion_kto(tiny_model_dirs):
    """Diffusion-KTO: g = e_ref - e, z0 = clamp(mean g, 0), loss = 1 - sigmoid(y * beta * (g - z0))."""
    parts, ctx, batch = _setup(tiny_model_dirs["sd15"], MethodConfig(name="kto", kto=KtoOptions(beta=1000.0)))
    batch = {**batch, "groups": 2 * B, "group_size": 1, "label": torch.tensor([True, False, True, False])}
    torch.manual_seed(9)
    loss, _ = kto_step(ctx, parts.unet, batch)
    torch.manual_seed(9)
    t, noise = sample_shared_timesteps_and_noise(2 * B, 1, (4, 16, 16), 1000, "cpu")
    x0, cond = batch["latent_mean"], batch["prompt_embeds"]
    with torch.no_grad():
        e = _official_errors(parts.unet, parts.scheduler, x0, cond, t, noise, "epsilon")
        parts.unet.disable_adapters()
        e_ref = _official_errors(parts.unet, parts.scheduler, x0, cond, t, noise, "epsilon")
        parts.unet.enable_adapters()
    g_ = e_ref - e
    z0 = g_.mean().clamp(min=0)
    y = batch["label"].float() * 2 - 1
    official = (1 - torch.sigmoid(y * 1000.0 * (g_ - z0))).mean()
    torch.testing.assert_close(loss.detach(), official, rtol=1e-4, atol=1e-6)
    # the metric keys do not depend on the labels in the batch (the loop reduces one vector across ranks)
    _, metrics_mixed = kto_step(ctx, parts.unet, batch)
    _, metrics_one_label = kto_step(ctx, parts.unet, {**batch, "label": torch.ones(2 * B, dtype=torch.bool)})
    assert metrics_mixed.keys() == metrics_one_label.keys()


def test_sdxl_time_ids_of_a_non_square_image():
    from PIL import Image

    from mmalign.diffusion.adapter import constant_time_ids, preprocess_image

    pixels, time_ids = preprocess_image(Image.new("RGB", (48, 32), (255, 0, 0)), 32)
    assert pixels.shape == (3, 32, 32) and float(pixels.max()) == 1.0 and float(pixels.min()) == -1.0
    assert time_ids.tolist() == [32, 48, 0, 8, 32, 32]  # original (h, w), crop (top, left), target (h, w)
    assert constant_time_ids(2, 1024, "cpu").tolist() == [[1024, 1024, 0, 0, 1024, 1024]] * 2


def test_shared_timesteps_and_noise_layout():
    t, noise = sample_shared_timesteps_and_noise(3, 2, (4, 2, 2), 1000, "cpu")
    assert torch.equal(t[:3], t[3:]) and torch.equal(noise[:3], noise[3:])
    pred, target = torch.zeros(2, 4, 2, 2), torch.ones(2, 4, 2, 2)
    target[1] *= 3
    torch.testing.assert_close(per_sample_error(pred, target), torch.tensor([1.0, 9.0]))


def test_flow_target_and_velocity_target():
    """Rectified flow: x = (1 - sigma) x0 + sigma eps, target eps - x0 (sigma = t / T); v = a eps - s x0."""
    from diffusers import DDPMScheduler

    from mmalign.diffusion.scores import noisy_input_and_target

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    x0, eps, t = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3), torch.tensor([250, 900])
    x, target = noisy_input_and_target(scheduler, x0, eps, t, "flow")
    sigma = torch.tensor([0.25, 0.9]).view(2, 1, 1, 1)
    torch.testing.assert_close(x, (1 - sigma) * x0 + sigma * eps)
    torch.testing.assert_close(target, eps - x0)
    x, target = noisy_input_and_target(scheduler, x0, eps, t, "v_prediction")
    abar = scheduler.alphas_cumprod[t].view(2, 1, 1, 1)
    torch.testing.assert_close(x, abar.sqrt() * x0 + (1 - abar).sqrt() * eps)
    torch.testing.assert_close(target, abar.sqrt() * eps - (1 - abar).sqrt() * x0)


def _diffusers_script_loss(model_losses, ref_losses, beta_dpo: float, loss_type: str) -> torch.Tensor:
    """huggingface/diffusers @ 58eb52c0 examples/research_projects/diffusion_dpo/train_diffusion_dpo.py l.851-885
    (the IPO line's undefined ``args.beta`` read as ``args.beta_dpo``)."""
    model_losses_w, model_losses_l = model_losses.chunk(2)
    model_diff = model_losses_w - model_losses_l
    ref_losses_w, ref_losses_l = ref_losses.chunk(2)
    ref_diff = ref_losses_w - ref_losses_l
    logits = ref_diff - model_diff
    if loss_type == "sigmoid":
        return -1 * F.logsigmoid(beta_dpo * logits).mean()
    if loss_type == "hinge":
        return torch.relu(1 - beta_dpo * logits).mean()
    return ((logits - 1 / (2 * beta_dpo)) ** 2).mean()


def test_ipo_decision_against_the_diffusers_script():
    """Issue 16: method.beta is the official -(beta/2) beta for every loss type; the diffusers script's beta_dpo is
    beta/2. Its sigmoid and hinge then equal ours, and its IPO line is 4x ours (same minimiser h* = 1/(2 beta))."""
    from mmalign.objectives import preference_loss

    g = torch.Generator().manual_seed(0)
    beta = 5000.0
    e_ref = 0.1 + 0.05 * torch.rand(2 * 8, generator=g)
    e = e_ref + 2e-4 * torch.randn(2 * 8, generator=g)  # margins around 1/(2 beta) = 1e-4
    (e_w, e_l), (r_w, r_l) = e.chunk(2), e_ref.chunk(2)
    ours = {}
    for kind in ("sigmoid", "hinge", "ipo"):
        b = 100.0 if kind == "hinge" else beta  # keep the hinge inside its linear part
        losses, _ = preference_loss(kind, chosen=-0.5 * e_w, rejected=-0.5 * e_l, ref_chosen=-0.5 * r_w,
                                    ref_rejected=-0.5 * r_l, beta=b)
        ours[kind] = losses.mean()
        theirs = _diffusers_script_loss(e, e_ref, b / 2, kind)
        factor = 4.0 if kind == "ipo" else 1.0
        torch.testing.assert_close(factor * ours[kind], theirs, rtol=1e-5, atol=1e-12)
    # the IPO loss is minimal where h = -(1/2)((e_w - e_l) - (e_ref_w - e_ref_l)) = 1/(2 beta)
    h = -0.5 * ((e_w - e_l) - (r_w - r_l))
    torch.testing.assert_close(ours["ipo"], ((h - 1 / (2 * beta)) ** 2).mean(), rtol=1e-5, atol=1e-14)
