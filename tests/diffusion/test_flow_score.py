"""The flow-matching score of SD3 / FLUX (tiny random-weight pipelines of the real classes, saved in the released
layout and loaded with from_pretrained): timestep sampling as diffusers' SD3 / FLUX scripts, and Diffusion-DPO's
loss equal to an independent computation of the flow-matching formula (and log 2 at initialisation)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmalign.diffusion.adapter import encode_pixels, encode_text, load_parts, preprocess_image
from mmalign.diffusion.config import MethodConfig
from mmalign.diffusion.inputs import InputBuilder
from mmalign.diffusion.lora import add_lora
from mmalign.diffusion.reference import ReferenceProvider
from mmalign.diffusion.scores import training_timesteps_and_noise
from mmalign.lora_config import diffusion_lora
from tests.helpers import LOG2, perturb_lora

from .conftest import square


@pytest.fixture(scope="module")
def flow_parts(tiny_model_dirs):
    return {kind: load_parts(tiny_model_dirs[kind]) for kind in ("sd3", "flux")}


def test_loads_flow_families(flow_parts, tiny_model_dirs):
    sd3, flux = flow_parts["sd3"], flow_parts["flux"]
    assert (sd3.family, flux.family) == ("sd3", "flux")
    assert sd3.prediction_type == flux.prediction_type == "flow"
    assert type(sd3.denoiser).__name__ == "SD3Transformer2DModel" and sd3.unet is None
    assert type(flux.denoiser).__name__ == "FluxTransformer2DModel"
    assert type(sd3.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert sd3.scheduler is not sd3.pipeline.scheduler  # private copy: validation's set_timesteps never touches it
    assert len(sd3.text_encoders) == 3 and len(flux.text_encoders) == 2
    emb = encode_text(sd3, ["a red square", ""], "cpu")
    assert emb["prompt_embeds"].shape == (2, 77 + 256, 96) and emb["pooled"].shape == (2, 64)  # CLIP 77 + T5 256
    emb = encode_text(flux, ["a red square"], "cpu")
    assert emb["prompt_embeds"].shape == (1, 512, 32) and emb["pooled"].shape == (1, 32)


@pytest.mark.parametrize("kind,median_sigma", [("sd3", 0.75), ("flux", 0.5)])
def test_timesteps_logit_normal_over_the_scheduler_table(flow_parts, kind, median_sigma):
    """u ~ sigmoid(N(0, 1)), index = int(1000 u), t = scheduler.timesteps[index]: SD3's table is shifted (shift 3:
    median sigma 3*0.5 / (1 + 2*0.5) = 0.75), FLUX's (dynamic shifting) is not (median 0.5). One t and one noise
    per group, shared by its members (member-major layout)."""
    parts = flow_parts[kind]
    t, noise = training_timesteps_and_noise(parts, 4000, 2, (16, 4, 4), "cpu", torch.Generator().manual_seed(0))
    assert t.shape == (8000,) and noise.shape == (8000, 16, 4, 4)
    assert torch.equal(t[:4000], t[4000:]) and torch.equal(noise[:4000], noise[4000:])
    table = set(parts.scheduler.timesteps.tolist())
    assert all(v in table for v in t[:200].tolist())
    assert float((t / 1000).median()) == pytest.approx(median_sigma, abs=0.02)
    uniform = type(parts.flow)(weighting_scheme="uniform")
    parts_u = type(parts)(**{**parts.__dict__, "flow": uniform})
    t_u, _ = training_timesteps_and_noise(parts_u, 4000, 1, (1,), "cpu", torch.Generator().manual_seed(0))
    assert float(t_u.float().std()) > float(t[:4000].float().std())  # logit-normal concentrates mid-range


def _pair_batch(parts, resolution=32):
    pixels = torch.stack([preprocess_image(square(c, seed=i), resolution)[0] for i, c in enumerate(["red", "blue",
                                                                                                     "green", "red"])])
    return {"pixels": pixels, "prompts": ["a red square", "a blue square"] * 2, "groups": 2, "group_size": 2}


def _pack(x):  # FLUX 2x2 packing written out: (N, C, h, w) -> (N, h/2 * w/2, 4C), channel-major inside a patch
    n, c, h, w = x.shape
    return x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(n, (h // 2) * (w // 2), c * 4)


def _velocity_error(parts, model, x0, noise, t, embeds, pooled):
    sigma = (t / 1000.0).view(-1, 1, 1, 1)
    x_t = (1 - sigma) * x0 + sigma * noise
    target = noise - x0
    if parts.family == "sd3":
        v = model(hidden_states=x_t, timestep=t, encoder_hidden_states=embeds, pooled_projections=pooled).sample
    else:
        n, _, h, w = x0.shape
        ids = torch.stack(torch.meshgrid(torch.arange(h // 2), torch.arange(w // 2), indexing="ij"), -1).reshape(-1, 2)
        img_ids = torch.cat([torch.zeros(len(ids), 1), ids.float()], dim=1)
        v = model(hidden_states=_pack(x_t), timestep=t / 1000.0, guidance=torch.full((n,), 3.5),
                  pooled_projections=pooled, encoder_hidden_states=embeds, txt_ids=torch.zeros(embeds.shape[1], 3),
                  img_ids=img_ids).sample
        target = _pack(target)
    return (v - target).pow(2).flatten(1).mean(1)


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_dpo_loss_equals_flow_formula(tiny_model_dirs, monkeypatch, kind):
    """dpo_step's loss == -logsig(-(beta/2) ((e_w - e_l) - (e_ref_w - e_ref_l))) with e the element-mean velocity
    error at the shared (t, noise), computed here from the raw transformer call; log 2 while the LoRA is at init."""
    from mmalign.diffusion import step_context as methods
    from mmalign.diffusion.steps.dpo import dpo_step

    parts = load_parts(tiny_model_dirs[kind])
    model = parts.denoiser
    add_lora(model, diffusion_lora(rank=4))
    inputs = InputBuilder(parts, 32, latent_sample="mean")
    ctx = methods.StepContext(parts, inputs, ReferenceProvider("lora"), MethodConfig(name="dpo", beta=2000.0),
                              torch.device("cpu"))
    batch = _pair_batch(parts)
    drawn = {}
    real = methods.training_timesteps_and_noise

    def record(*args, **kwargs):
        drawn["t"], drawn["noise"] = real(*args, **kwargs)
        return drawn["t"], drawn["noise"]

    monkeypatch.setattr(methods, "training_timesteps_and_noise", record)
    torch.manual_seed(0)
    loss0, metrics0 = dpo_step(ctx, model, batch)
    assert float(loss0) == pytest.approx(LOG2, abs=1e-6)  # LoRA B = 0: policy == reference

    perturb_lora(model, scale=0.3, seed=1)  # a "trained" adapter
    torch.manual_seed(1)
    loss, metrics = dpo_step(ctx, model, batch)
    t, noise = drawn["t"], drawn["noise"]
    assert torch.equal(t[:2], t[2:]) and t.dtype == torch.float32

    with torch.no_grad():  # independent: VAE moments by hand, the pipeline's own encode_prompt, raw forward calls
        dist = parts.vae.encode(batch["pixels"]).latent_dist
        cfg = parts.vae.config
        x0 = (dist.mean - cfg.shift_factor) * cfg.scaling_factor
        torch.testing.assert_close(x0, encode_pixels(parts, batch["pixels"])[0])
        if kind == "sd3":
            embeds, _, pooled, _ = parts.pipeline.encode_prompt(batch["prompts"], None, None,
                                                                do_classifier_free_guidance=False,
                                                                max_sequence_length=256, device="cpu")
        else:
            embeds, pooled, _ = parts.pipeline.encode_prompt(batch["prompts"], None, max_sequence_length=512,
                                                             device="cpu")
        e = _velocity_error(parts, model, x0, noise, t, embeds, pooled)
        model.disable_adapters()
        e_ref = _velocity_error(parts, model, x0, noise, t, embeds, pooled)
        model.enable_adapters()
    (e_w, e_l), (r_w, r_l) = e.chunk(2), e_ref.chunk(2)
    expected = -F.logsigmoid(-0.5 * 2000.0 * ((e_w - e_l) - (r_w - r_l))).mean()
    assert abs(float(expected) - LOG2) > 1e-3  # the check is not vacuous
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(metrics["e_w"], e_w.mean(), rtol=1e-5, atol=1e-6)
    assert metrics["model_mse"] > 0.1  # velocity errors: O(1) for a random model


def test_sd3_without_t5_and_unsupported_methods(tmp_path):
    """SD3 checkpoints may ship without T5 (the pipeline then feeds zeros); smpo / inpo / ppd are ConfigErrors."""
    from mmalign.config import ConfigError
    from mmalign.diffusion.build import check_family_options, local_family
    from mmalign.diffusion.config import DiffusionRecipeConfig
    from mmalign.testing.tiny_flow import tiny_sd3_pipeline

    tiny_sd3_pipeline(with_t5=False).save_pretrained(str(tmp_path / "sd3_no_t5"))
    parts = load_parts(str(tmp_path / "sd3_no_t5"))
    assert len(parts.text_encoders) == 2
    emb = encode_text(parts, ["a red square"], "cpu")
    assert emb["prompt_embeds"].shape == (1, 77 + 256, 96)
    assert torch.count_nonzero(emb["prompt_embeds"][:, 77:]) == 0  # zeros where T5 would be
    assert local_family(str(tmp_path / "sd3_no_t5")) == "sd3"
    cfg = DiffusionRecipeConfig()
    for method in ("smpo", "inpo", "ppd"):
        cfg.method.name = method
        with pytest.raises(ConfigError, match="not supported for sd3"):
            check_family_options(cfg, "sd3")
    cfg.method.name, cfg.method.timestep_weight = "dpo", "snr_inverse"
    with pytest.raises(ConfigError, match="timestep_weight"):
        check_family_options(cfg, "flux")


@pytest.mark.parametrize("precondition", [False, True])
def test_sd3_sft_equals_the_diffusers_dreambooth_formula(tiny_model_dirs, monkeypatch, precondition):
    """SD3 SFT == diffusers ``examples/dreambooth/train_dreambooth_lora_sd3.py`` (huggingface/diffusers, the loss
    block after "Preconditioning of the model outputs") with ``--precondition_outputs`` 0 (our default) and 1
    (``method.sft.precondition_outputs=true``): transcribed here on the raw transformer call, weighting
    ``compute_loss_weighting_for_sd3`` (1 for logit_normal)."""
    from diffusers.training_utils import compute_loss_weighting_for_sd3

    from mmalign.diffusion import step_context as methods
    from mmalign.diffusion.registry import SftOptions
    from mmalign.diffusion.steps.sft import sft_step

    parts = load_parts(tiny_model_dirs["sd3"])
    model = parts.denoiser
    add_lora(model, diffusion_lora(rank=4))
    perturb_lora(model, scale=0.3, seed=2)
    inputs = InputBuilder(parts, 32, latent_sample="mean")
    method = MethodConfig(name="sft", sft=SftOptions(precondition_outputs=precondition))
    ctx = methods.StepContext(parts, inputs, ReferenceProvider("none"), method, torch.device("cpu"))
    batch = _pair_batch(parts)
    drawn = {}
    real = methods.training_timesteps_and_noise

    def record(*args, **kwargs):
        drawn["t"], drawn["noise"] = real(*args, **kwargs)
        return drawn["t"], drawn["noise"]

    monkeypatch.setattr(methods, "training_timesteps_and_noise", record)
    torch.manual_seed(3)
    loss, _ = sft_step(ctx, model, batch)
    t, noise = drawn["t"], drawn["noise"]
    with torch.no_grad():
        x0 = encode_pixels(parts, batch["pixels"][:2])[0]
        embeds, _, pooled, _ = parts.pipeline.encode_prompt(batch["prompts"][:2], None, None,
                                                            do_classifier_free_guidance=False,
                                                            max_sequence_length=256, device="cpu")
        sigmas = (t / 1000.0).view(-1, 1, 1, 1)
        noisy_model_input = (1.0 - sigmas) * x0 + sigmas * noise
        model_pred = model(hidden_states=noisy_model_input, timestep=t, encoder_hidden_states=embeds,
                           pooled_projections=pooled, return_dict=False)[0]
        if precondition:
            model_pred = model_pred * (-sigmas) + noisy_model_input
        weighting = compute_loss_weighting_for_sd3(weighting_scheme="logit_normal", sigmas=sigmas)
        target = x0 if precondition else noise - x0
        expected = torch.mean((weighting.float() * (model_pred.float() - target.float()) ** 2).reshape(2, -1), 1)
    torch.testing.assert_close(loss.detach(), expected.mean(), rtol=1e-4, atol=1e-6)
    other = (noise - x0) if precondition else x0  # the two settings differ on these inputs
    assert not torch.allclose(expected, ((model_pred.float() - other) ** 2).flatten(1).mean(1), rtol=1e-3)
