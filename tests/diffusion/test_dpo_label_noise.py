"""Diffusion-DPO with TRL's label-noise losses (``method.dpo.loss_type: robust | cdpo``, ``label_smoothing``),
added through the method registry: the step equals an independent transcription of the formulas on the
official Diffusion-DPO errors, the shipped config loads, and a smoothing the loss does not read is an error."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmalign.config import ConfigError, load_config
from mmalign.diffusion.adapter import load_parts
from mmalign.diffusion.config import DiffusionRecipeConfig
from mmalign.diffusion.inputs import InputBuilder
from mmalign.diffusion.lora import add_lora
from mmalign.diffusion.reference import ReferenceProvider
from mmalign.diffusion.registry import DpoOptions, MethodConfig, method_spec
from mmalign.diffusion.step_context import StepContext
from mmalign.lora_config import diffusion_lora
from tests.helpers import REPO, perturb_lora

CONFIG = REPO / "recipes" / "configs" / "diffusion" / "sd15_dpo_robust.yaml"
B, EPS, BETA = 3, 0.2, 5000.0


@pytest.mark.parametrize("loss_type", ["robust", "cdpo"])
def test_label_noise_loss_matches_its_formula_on_official_errors(tiny_model_dirs, loss_type):
    parts = load_parts(tiny_model_dirs["sd15"])
    add_lora(parts.unet, diffusion_lora(rank=4, alpha=8))
    perturb_lora(parts.unet, scale=0.05, seed=1)  # policy != reference
    method = MethodConfig(name="dpo", beta=BETA, dpo=DpoOptions(loss_type=loss_type, label_smoothing=EPS))
    ctx = StepContext(parts, InputBuilder(parts, resolution=32, latent_sample="mean"), ReferenceProvider("lora"),
                      method, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    x0, cond = torch.randn(2 * B, 4, 16, 16, generator=g), torch.randn(2 * B, 77, 32, generator=g)
    batch = {"latent_mean": x0, "latent_std": torch.ones_like(x0), "prompt_embeds": cond, "groups": B,
             "group_size": 2}
    torch.manual_seed(5)
    loss, metrics = method_spec("dpo").hook("step")(ctx, parts.unet, batch)

    torch.manual_seed(5)  # the step's draws: one t and one noise per pair, shared by winner and loser
    t = torch.randint(0, 1000, (B,)).repeat(2)
    noise = torch.randn(B, 4, 16, 16).repeat(2, 1, 1, 1)
    abar = parts.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    with torch.no_grad():
        e = ((parts.unet(x_t, t, encoder_hidden_states=cond).sample - noise) ** 2).mean(dim=(1, 2, 3))
        parts.unet.disable_adapters()
        e_ref = ((parts.unet(x_t, t, encoder_hidden_states=cond).sample - noise) ** 2).mean(dim=(1, 2, 3))
        parts.unet.enable_adapters()
    (e_w, e_l), (r_w, r_l) = e.chunk(2), e_ref.chunk(2)
    z = -BETA / 2 * ((e_w - e_l) - (r_w - r_l))  # the official Diffusion-DPO logit
    expected = {
        "cdpo": -(1 - EPS) * F.logsigmoid(z) - EPS * F.logsigmoid(-z),
        "robust": (-(1 - EPS) * F.logsigmoid(z) + EPS * F.logsigmoid(-z)) / (1 - 2 * EPS),
    }[loss_type].mean()
    assert (z.abs() > 1e-3).all(), "policy and reference must differ for a meaningful check"
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-6)
    sigmoid = -F.logsigmoid(z).mean()
    assert abs(float(expected) - float(sigmoid)) > 1e-4  # the smoothing changes the loss
    assert float(metrics["implicit_acc"]) == pytest.approx(float((z > 0).float().mean()))


def test_shipped_config_and_bad_smoothing():
    cfg = load_config(DiffusionRecipeConfig, str(CONFIG))
    assert (cfg.method.dpo.loss_type, cfg.method.dpo.label_smoothing) == ("robust", 0.1)
    with pytest.raises(ConfigError, match="'method.dpo.label_smoothing'.*< 0.5"):
        load_config(DiffusionRecipeConfig, str(CONFIG), ["method.dpo.label_smoothing=0.5"])
    with pytest.raises(ConfigError, match="label_smoothing .0.1. is read by loss_type cdpo and robust only"):
        load_config(DiffusionRecipeConfig, str(CONFIG), ["method.dpo.loss_type=sigmoid"])
