"""Rollouts with log-probs on the one sampling path (issue 24 item 1): the tiny SD1.5 / SDXL / SD3 / FLUX pipelines.

The log-prob of the sampled trajectory must equal the training-time recomputation (ratio 1 at the first inner
step) in fp32 and in bf16 without autocast; ``noise_level=0`` must reproduce the plain pipeline output.
"""

from __future__ import annotations

import pytest
import torch

from mmalign.diffusion.rollouts.rollout import Rollout, reference_step_log_prob, rollout, step_log_prob
from mmalign.diffusion.sampling import denoiser, generate
from tests.helpers import perturb_lora

PROMPTS = ["a red square", "a blue circle"]
KINDS = ["sd15", "sdxl", "sd3", "flux"]
GUIDANCE = {"sd15": 5.0, "sd2v": 5.0, "sdxl": 5.0, "sd3": 4.5, "flux": 3.5}


def _pipe(kind: str, dtype: torch.dtype = torch.float32, lora: bool = False):
    from mmalign.testing.tiny_diffusion import tiny_pipeline

    pipe = tiny_pipeline(kind, seed=0)
    pipe.set_progress_bar_config(disable=True)
    net = denoiser(pipe)
    if lora:
        from mmalign.diffusion.lora import add_lora
        from mmalign.lora_config import diffusion_lora

        add_lora(net, diffusion_lora(rank=4, alpha=8))
        perturb_lora(net, scale=0.05, seed=1)
    net.to(dtype)
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        if getattr(pipe, name, None) is not None:
            getattr(pipe, name).to(dtype)
    return pipe


def _embeds(pipe, kind: str, prompts: list[str]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        if kind in ("sd15", "sd2v"):
            return {"prompt_embeds": pipe.encode_prompt(prompts, "cpu", 1, False)[0]}
        if kind == "sdxl":
            e, _, p, _ = pipe.encode_prompt(prompts, device="cpu", do_classifier_free_guidance=False)
        elif kind == "sd3":
            e, _, p, _ = pipe.encode_prompt(prompts, None, None, device="cpu", do_classifier_free_guidance=False,
                                            max_sequence_length=16)
        else:
            e, p, _ = pipe.encode_prompt(prompts, None, device="cpu", max_sequence_length=16)
    return {"prompt_embeds": e, "pooled": p}


def _rollout(pipe, kind: str, steps: int = 3, group_size: int = 2, **kw) -> Rollout:
    negative = None if kind == "flux" else _embeds(pipe, kind, [""])
    kw = {"height": 32, "width": 32, **kw}
    return rollout(pipe, _embeds(pipe, kind, PROMPTS), negative=negative, group_size=group_size,
                   num_inference_steps=steps, guidance_scale=GUIDANCE[kind],
                   generator=torch.Generator().manual_seed(0), **kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("kind", KINDS)
def test_rollout_log_probs_equal_the_recomputation(kind, dtype):
    pipe = _pipe(kind, dtype)
    r = _rollout(pipe, kind)
    b, t = r.batch_size, r.num_steps
    assert r.latents.shape[:2] == (b, t + 1) and r.log_probs.shape == (b, t) and b == 2 * len(PROMPTS)
    assert r.latents.dtype == torch.float32 and r.log_probs.dtype == torch.float32
    assert r.call.cfg == (kind != "flux") and r.prompt_ids.tolist() == [0, 0, 1, 1]
    assert r.images.shape == (b, 3, 32, 32) and 0 <= r.images.min() and r.images.max() <= 1 and r.images.std() > 0
    assert torch.isfinite(r.log_probs).all() and r.stochastic.all()
    net = denoiser(pipe)
    # every (sample, step) pair, in a shuffled order and odd-sized chunks (a different batch than the rollout's)
    order = torch.randperm(b * t, generator=torch.Generator().manual_seed(1))
    for chunk in order.split(3):
        samples, steps = chunk // t, chunk % t
        out = step_log_prob(net, r, samples, steps)
        ratio = torch.exp(out.log_prob - r.log_probs[samples, steps])
        assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-5, rtol=0), (kind, dtype, ratio)
    # and the recomputed step is a real function of the model: other weights, other log-probs
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    moved = step_log_prob(net, r, torch.arange(b), 0)
    assert (moved.log_prob - r.log_probs[:, 0]).abs().max() > 1e-3


@pytest.mark.parametrize("kind", [*KINDS, "sd2v"])
def test_noise_level_zero_is_the_plain_pipeline(kind):
    pipe = _pipe(kind)
    r = _rollout(pipe, kind, noise_level=0.0)
    assert not r.stochastic.any() and (r.log_probs == 0).all() and r.train_steps.shape == (r.batch_size, 0)
    embeds = _embeds(pipe, kind, PROMPTS)
    kwargs = {"prompt_embeds": embeds["prompt_embeds"].repeat_interleave(2, 0)}
    if "pooled" in embeds:
        kwargs["pooled_prompt_embeds"] = embeds["pooled"].repeat_interleave(2, 0)
    if kind != "flux":
        neg = _embeds(pipe, kind, [""])
        kwargs["negative_prompt_embeds"] = neg["prompt_embeds"].repeat(4, 1, 1)
        if "pooled" in neg:
            kwargs["negative_pooled_prompt_embeds"] = neg["pooled"].repeat(4, 1)
    plain = generate(pipe, None, output_type="latent", latents=r.latents[:, 0].clone(), num_inference_steps=3,
                     guidance_scale=GUIDANCE[kind], height=32, width=32, **kwargs)
    final = r.latents[:, -1]
    if kind == "flux":
        final = pipe._unpack_latents(final, 32, 32, pipe.vae_scale_factor)
    assert torch.equal(final, plain.float()) and torch.equal(r.final_latents, final)
    noisy = _rollout(pipe, kind)
    assert not torch.equal(noisy.final_latents, r.final_latents)  # noise on: another sample
    out = step_log_prob(denoiser(pipe), noisy, torch.arange(4), 1)
    assert torch.allclose(out.log_prob, noisy.log_probs[:, 1], atol=1e-5, rtol=0)


def test_timestep_fraction_sde_window_and_shared_noise():
    pipe = _pipe("sd3")
    r = _rollout(pipe, "sd3", steps=10, timestep_fraction=0.99, same_noise_per_group=True)
    assert r.train_steps.shape == (4, 9) and r.train_steps[0].tolist() == list(range(9))  # flow_grpo: 9 of 10
    assert torch.equal(r.latents[0, 0], r.latents[1, 0]) and not torch.equal(r.latents[1, 0], r.latents[2, 0])
    w = _rollout(pipe, "sd3", steps=6, sde_window=2, sde_window_range=(0, 4))
    rows = w.stochastic.sum(1)
    assert (rows == 2).all() and torch.equal(w.stochastic[0], w.stochastic[3])
    start = int(w.stochastic[0].nonzero()[0])
    assert 0 <= start <= 2 and w.train_steps[0].tolist() == [start, start + 1]
    assert (w.log_probs[~w.stochastic] == 0).all() and (w.log_probs[w.stochastic] != 0).all()
    out = step_log_prob(denoiser(pipe), w, torch.arange(4), w.train_steps[:, 1])
    assert torch.allclose(out.log_prob, w.log_probs[torch.arange(4), w.train_steps[:, 1]], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="sde_window"):
        _rollout(pipe, "sd3", steps=4, sde_window=5)
    with pytest.raises(ValueError, match="timestep_fraction"):
        _rollout(pipe, "sd3", steps=2, timestep_fraction=0.0)


@pytest.mark.parametrize("kind", ["sd15", "sd3"])
def test_policy_gradients_reference_adapters_off_and_cat(kind):
    pipe = _pipe(kind, lora=True)
    net = denoiser(pipe)
    r = _rollout(pipe, kind)
    out = step_log_prob(net, r, torch.tensor([0, 3]), torch.tensor([1, 2]), detach_uncond=True)
    out.log_prob.sum().backward()
    grads = [p.grad for n, p in net.named_parameters() if "lora" in n]
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    ref = reference_step_log_prob(net, r, torch.tensor([0, 3]), torch.tensor([1, 2]))
    assert not ref.log_prob.requires_grad
    assert (ref.log_prob - out.log_prob.detach()).abs().max() > 1e-4  # adapters off: another policy
    net.disable_adapters()
    base = step_log_prob(net, r, torch.tensor([0, 3]), torch.tensor([1, 2]))
    net.enable_adapters()
    assert torch.allclose(ref.mean, base.mean.detach(), atol=1e-6) and torch.allclose(ref.log_prob, base.log_prob.detach())
    # cfg=False: the conditional branch alone (= CFG at guidance 1)
    from dataclasses import replace

    alone = step_log_prob(net, r, torch.arange(4), 1, cfg=False)
    unit = step_log_prob(net, replace(r, guidance_scale=1.0), torch.arange(4), 1)
    assert torch.allclose(alone.log_prob, unit.log_prob, atol=1e-5) and not torch.allclose(
        alone.log_prob, r.log_probs[:, 1], atol=1e-3)
    # two calls concatenated recompute as one; select keeps the rows it names
    r2 = _rollout(pipe, kind, group_size=1)
    both = Rollout.cat([r, r2])
    assert both.batch_size == 6 and both.prompt_ids.tolist() == [0, 0, 1, 1, 2, 3]
    samples = torch.tensor([5, 1, 4])
    again = step_log_prob(net, both, samples, 0)
    assert torch.allclose(again.log_prob, both.log_probs[samples, 0], atol=1e-5, rtol=0)
    sub = both.select(samples)
    assert torch.equal(sub.latents, both.latents[samples])
    assert torch.allclose(step_log_prob(net, sub, torch.arange(3), 0).log_prob, again.log_prob, atol=1e-6)


def test_bad_inputs_are_clear_errors():
    pipe = _pipe("sd15")
    assert _rollout(pipe, "sd15", steps=1, height=None, width=None).images.shape[-2:] == (32, 32)  # default size
    with pytest.raises(ValueError, match="flow-matching"):
        _rollout(pipe, "sd15", sampler="flow_grpo")
    with pytest.raises(ValueError, match="group_size"):
        _rollout(pipe, "sd15", group_size=0)
    flux = _pipe("flux")
    with pytest.raises(ValueError, match="true CFG"):
        rollout(flux, _embeds(flux, "flux", PROMPTS), negative=_embeds(flux, "flux", [""]), group_size=2,
                num_inference_steps=2, guidance_scale=3.5)


def test_same_seed_same_rollout_chunked_decode_and_custom_sigmas():
    pipe = _pipe("sd3")
    a, b = _rollout(pipe, "sd3"), _rollout(pipe, "sd3", decode_batch_size=3)
    assert torch.equal(a.latents, b.latents) and torch.equal(a.log_probs, b.log_probs)  # resume needs this
    assert torch.allclose(a.images, b.images, atol=1e-6)
    grid = torch.linspace(1, 0, 4)[:-1]  # DanceGRPO: sd3_time_shift(3, linspace(1, 0, N+1))
    c = _rollout(pipe, "sd3", sampler="dance", sigmas=grid.tolist())
    shifted = 3 * torch.linspace(1, 0, 4) / (1 + 2 * torch.linspace(1, 0, 4))
    assert torch.allclose(c.step_params["sigma"][0], shifted[:-1]) and torch.allclose(
        c.step_params["sigma_prev"][0], shifted[1:], atol=1e-7)
    out = step_log_prob(denoiser(pipe), c, torch.arange(4), 2)
    assert torch.allclose(out.log_prob, c.log_probs[:, 2], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["sd15", "sd3"])
def test_one_grpo_step_raises_the_log_prob_of_advantaged_samples(kind):
    from mmalign.objectives.grpo import group_advantages, grpo_loss

    pipe = _pipe(kind, lora=True)
    net = denoiser(pipe)
    r = _rollout(pipe, kind)
    rewards = torch.tensor([1.0, 0.0, 0.2, 0.9])
    adv = group_advantages(rewards, r.prompt_ids).advantages
    samples, steps = torch.arange(4), r.train_steps[:, 0]
    params = [p for n, p in net.named_parameters() if "lora" in n]
    opt = torch.optim.Adam(params, lr=1e-3)  # first step: -lr * sign(grad), a first-order loss decrease
    new = step_log_prob(net, r, samples, steps)
    loss, metrics = grpo_loss(new.log_prob, r.log_probs[samples, steps], adv, clip_range=0.2, adv_clip_max=5.0)
    assert float(metrics["approx_kl"]) < 1e-10 and float(metrics["clipfrac"]) == 0  # ratio 1 at the first step
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = step_log_prob(net, r, samples, steps).log_prob
    gain = after - r.log_probs[samples, steps]
    assert float((adv * gain).sum()) > 0  # the step moved probability towards the advantaged samples
    assert gain[adv > 0].mean() > gain[adv < 0].mean()


@pytest.mark.parametrize("kind", ["sdxl", "flux"])
def test_ratio_one_in_the_training_layout_bf16_base_fp32_lora(kind):
    """The LoRA run's layout (mmalign.diffusion.build: frozen base in bf16, trainable LoRA weights in fp32), no
    autocast: rollout and recomputation still agree exactly, and the reference (adapters off) differs."""
    pipe = _pipe(kind, torch.bfloat16, lora=True)
    net = denoiser(pipe)
    for p in net.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    r = _rollout(pipe, kind)
    samples, steps = torch.tensor([3, 0, 2]), torch.tensor([0, 2, 1])
    out = step_log_prob(net, r, samples, steps, detach_uncond=True)
    assert torch.allclose(out.log_prob, r.log_probs[samples, steps], atol=1e-5, rtol=0)
    ref = reference_step_log_prob(net, r, samples, steps)
    assert (ref.log_prob - out.log_prob.detach()).abs().max() > 1e-4


def test_autocast_rollout_recomputes_under_the_same_autocast():
    from functools import partial

    autocast = partial(torch.autocast, "cpu", dtype=torch.bfloat16)
    pipe = _pipe("sd3", lora=True)
    r = _rollout(pipe, "sd3", autocast=autocast)
    samples, steps = torch.tensor([3, 0, 2]), torch.tensor([0, 2, 1])
    with autocast():
        out = step_log_prob(denoiser(pipe), r, samples, steps)
    assert out.log_prob.dtype == torch.float32
    assert torch.allclose(out.log_prob, r.log_probs[samples, steps], atol=1e-5, rtol=0)
