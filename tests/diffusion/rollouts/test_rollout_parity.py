"""Whole rollouts equal transcriptions of the official sampling loops on identical inputs (issue 24 item 1).

* SD3: yifan123/flow_grpo@ac4c86e8cae021841f1fde853d340e0db67690dd
  ``flow_grpo/diffusers_patch/sd3_pipeline_with_logprob.py`` lines 102-172 (CFG on ``[negative; positive]``, one
  ``sde_step_with_logprob`` per step, all latents and log-probs stored), and the training-time recomputation
  ``scripts/train_sd3.py`` lines 180-215 (``compute_log_prob``: CFG with the unconditional branch detached);
* SD1.5: kvablack/ddpo-pytorch@1958463f020112c9a7bc85768d296daacc2e1b4b
  ``ddpo_pytorch/diffusers_patch/pipeline_with_logprob.py`` lines 160-222 (``ddim_step_with_logprob`` with eta).

The transcriptions draw the initial latents and each step's noise from the same generator in the same order
(the official code passes no generator to its steps); the models are the tiny pipelines in float32.
"""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor

from mmalign.diffusion.rollouts.rollout import rollout
from tests.diffusion.rollouts.test_rollout import PROMPTS, _embeds, _pipe
from tests.diffusion.rollouts.test_sde_steps import _ddpo_ddim_step, _flow_grpo_sde_step


def _flow_grpo_loop(pipe, embeds, neg, steps, guidance, noise_level, generator, n):
    prompt_embeds = torch.cat([neg["prompt_embeds"].repeat(n, 1, 1), embeds["prompt_embeds"]])
    pooled = torch.cat([neg["pooled"].repeat(n, 1), embeds["pooled"]])
    latents = pipe.prepare_latents(n, pipe.transformer.config.in_channels, 32, 32, prompt_embeds.dtype, "cpu",
                                   generator)
    pipe.scheduler.set_timesteps(steps)
    all_latents, all_log_probs = [latents], []
    for t in pipe.scheduler.timesteps:
        latent_model_input = torch.cat([latents] * 2)
        timestep = t.expand(latent_model_input.shape[0])
        noise_pred = pipe.transformer(hidden_states=latent_model_input, timestep=timestep,
                                      encoder_hidden_states=prompt_embeds, pooled_projections=pooled,
                                      return_dict=False)[0]
        noise_pred = noise_pred.to(prompt_embeds.dtype)
        uncond, text = noise_pred.chunk(2)
        noise_pred = uncond + guidance * (text - uncond)
        noise = randn_tensor(noise_pred.shape, generator=generator, device=noise_pred.device, dtype=torch.float32)
        latents, log_prob, _, _ = _flow_grpo_sde_step(pipe.scheduler, noise_pred.float(), t.unsqueeze(0),
                                                      latents.float(), noise_level=noise_level, noise=noise)
        all_latents.append(latents)
        all_log_probs.append(log_prob)
    return torch.stack(all_latents, dim=1), torch.stack(all_log_probs, dim=1)


def _ddpo_loop(pipe, embeds, neg, steps, guidance, eta, generator, n):
    prompt_embeds = torch.cat([neg["prompt_embeds"].repeat(n, 1, 1), embeds["prompt_embeds"]])
    pipe.scheduler.set_timesteps(steps)
    latents = pipe.prepare_latents(n, pipe.unet.config.in_channels, 32, 32, prompt_embeds.dtype, "cpu", generator)
    all_latents, all_log_probs = [latents], []
    for t in pipe.scheduler.timesteps:
        latent_model_input = pipe.scheduler.scale_model_input(torch.cat([latents] * 2), t)
        noise_pred = pipe.unet(latent_model_input, t, encoder_hidden_states=prompt_embeds, return_dict=False)[0]
        uncond, text = noise_pred.chunk(2)
        noise_pred = uncond + guidance * (text - uncond)
        noise = randn_tensor(noise_pred.shape, generator=generator, device=noise_pred.device, dtype=torch.float32)
        latents, log_prob, _ = _ddpo_ddim_step(pipe.scheduler, noise_pred, t, latents, eta=eta, noise=noise)
        all_latents.append(latents)
        all_log_probs.append(log_prob)
    return torch.stack(all_latents, dim=1), torch.stack(all_log_probs, dim=1)


def _repeat(embeds, g):
    return {k: v.repeat_interleave(g, 0) for k, v in embeds.items()}


def test_sd3_rollout_equals_flow_grpo_sampler():
    pipe = _pipe("sd3")
    embeds, neg = _embeds(pipe, "sd3", PROMPTS), _embeds(pipe, "sd3", [""])
    ours = rollout(pipe, embeds, negative=neg, group_size=2, num_inference_steps=4, guidance_scale=4.5, height=32,
                   width=32, noise_level=0.7, generator=torch.Generator().manual_seed(7))
    lat, lp = _flow_grpo_loop(pipe, _repeat(embeds, 2), neg, 4, 4.5, 0.7, torch.Generator().manual_seed(7), 4)
    assert torch.allclose(ours.latents, lat, atol=1e-5, rtol=1e-5)
    assert torch.allclose(ours.log_probs, lp, atol=1e-5, rtol=1e-5)


def test_sd15_rollout_equals_ddpo_sampler():
    pipe = _pipe("sd15")
    embeds, neg = _embeds(pipe, "sd15", PROMPTS), _embeds(pipe, "sd15", [""])
    ours = rollout(pipe, embeds, negative=neg, group_size=2, num_inference_steps=4, guidance_scale=5.0, height=32,
                   width=32, sampler="ddim", noise_level=1.0, generator=torch.Generator().manual_seed(7))
    lat, lp = _ddpo_loop(pipe, _repeat(embeds, 2), neg, 4, 5.0, 1.0, torch.Generator().manual_seed(7), 4)
    assert torch.allclose(ours.latents, lat, atol=1e-5, rtol=1e-5)
    assert torch.allclose(ours.log_probs, lp, atol=1e-4, rtol=1e-5)


def _flow_grpo_compute_log_prob(transformer, scheduler, sample, j, embeds, pooled_embeds, guidance, noise_level):
    """flow_grpo ``scripts/train_sd3.py`` lines 180-215 (``compute_log_prob``, ``train.cfg=True``)."""
    noise_pred = transformer(hidden_states=torch.cat([sample["latents"][:, j]] * 2),
                             timestep=torch.cat([sample["timesteps"][:, j]] * 2), encoder_hidden_states=embeds,
                             pooled_projections=pooled_embeds, return_dict=False)[0]
    noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
    noise_pred_uncond = noise_pred_uncond.detach()
    noise_pred = noise_pred_uncond + guidance * (noise_pred_text - noise_pred_uncond)
    return _flow_grpo_sde_step(scheduler, noise_pred.float(), sample["timesteps"][:, j],
                               sample["latents"][:, j].float(), prev_sample=sample["next_latents"][:, j].float(),
                               noise_level=noise_level)


def test_sd3_recomputation_equals_flow_grpo_compute_log_prob():
    from mmalign.diffusion.rollouts.rollout import step_log_prob

    pipe = _pipe("sd3")
    embeds, neg = _embeds(pipe, "sd3", PROMPTS), _embeds(pipe, "sd3", [""])
    r = rollout(pipe, embeds, negative=neg, group_size=2, num_inference_steps=4, guidance_scale=4.5, height=32,
                width=32, generator=torch.Generator().manual_seed(3))
    pipe.scheduler.set_timesteps(4)
    sample = {"latents": r.latents[:, :-1], "next_latents": r.latents[:, 1:],
              "timesteps": pipe.scheduler.timesteps.repeat(4, 1)}
    full = _repeat(embeds, 2)
    cat_embeds = torch.cat([neg["prompt_embeds"].repeat(4, 1, 1), full["prompt_embeds"]])
    cat_pooled = torch.cat([neg["pooled"].repeat(4, 1), full["pooled"]])
    for j in range(4):
        _, lp, mean, std_dev_t = _flow_grpo_compute_log_prob(pipe.transformer, pipe.scheduler, sample, j, cat_embeds,
                                                             cat_pooled, 4.5, 0.7)
        ours = step_log_prob(pipe.transformer, r, torch.arange(4), j, detach_uncond=True)
        assert torch.allclose(ours.log_prob, lp, atol=1e-5, rtol=1e-5)
        assert torch.allclose(ours.mean, mean, atol=1e-5, rtol=1e-5)
        assert torch.allclose(ours.std_dev_t, std_dev_t.expand_as(ours.std_dev_t), rtol=1e-6)
