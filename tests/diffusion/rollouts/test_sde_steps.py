"""The stochastic steps equal transcriptions of the official functions on identical inputs (issue 24, Done when).

Transcriptions (written for this test from the pinned sources):

* ``_flow_grpo_sde_step`` — yifan123/flow_grpo@ac4c86e8cae021841f1fde853d340e0db67690dd
  ``flow_grpo/diffusers_patch/sd3_sde_with_logprob.py`` lines 11-70 (``sde_step_with_logprob``);
* ``_dance_flux_step`` — XueZeyue/DanceGRPO@15cc71d53cc2e6e18a68ee607d5fb6ba9a99e344
  ``fastvideo/train_grpo_flux.py`` lines 131-170 (``flux_step``, ``grpo=True, sde_solver=True``);
* ``_ddpo_ddim_step`` — kvablack/ddpo-pytorch@1958463f020112c9a7bc85768d296daacc2e1b4b
  ``ddpo_pytorch/diffusers_patch/ddim_with_logprob.py`` lines 17-192 (``ddim_step_with_logprob``; DanceGRPO's
  ``fastvideo/models/stable_diffusion/ddim_with_logprob.py`` is the same code).
"""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

from mmalign.diffusion.rollouts.sde_steps import ddim_alphas, ddim_step, flow_sde_step, gaussian_log_prob
from mmalign.testing.tiny_flow import SD3_SCHEDULER


def _flow_grpo_sde_step(self, model_output, timestep, sample, noise_level=0.7, prev_sample=None, noise=None):
    model_output, sample = model_output.float(), sample.float()
    if prev_sample is not None:
        prev_sample = prev_sample.float()
    step_index = [self.index_for_timestep(t) for t in timestep]
    prev_step_index = [step + 1 for step in step_index]
    sigma = self.sigmas[step_index].view(-1, 1, 1, 1)
    sigma_prev = self.sigmas[prev_step_index].view(-1, 1, 1, 1)
    sigma_max = self.sigmas[1].item()
    dt = sigma_prev - sigma
    std_dev_t = torch.sqrt(sigma / (1 - torch.where(sigma == 1, sigma_max, sigma))) * noise_level
    prev_sample_mean = (sample * (1 + std_dev_t**2 / (2 * sigma) * dt)
                        + model_output * (1 + std_dev_t**2 * (1 - sigma) / (2 * sigma)) * dt)
    if prev_sample is None:
        prev_sample = prev_sample_mean + std_dev_t * torch.sqrt(-1 * dt) * noise
    log_prob = (-((prev_sample.detach() - prev_sample_mean) ** 2) / (2 * ((std_dev_t * torch.sqrt(-1 * dt)) ** 2))
                - torch.log(std_dev_t * torch.sqrt(-1 * dt)) - torch.log(torch.sqrt(2 * torch.as_tensor(math.pi))))
    log_prob = log_prob.mean(dim=tuple(range(1, log_prob.ndim)))
    return prev_sample, log_prob, prev_sample_mean, std_dev_t


def _dance_flux_step(model_output, latents, eta, sigmas, index, prev_sample, noise=None):
    sigma = sigmas[index]
    dsigma = sigmas[index + 1] - sigma
    prev_sample_mean = latents + dsigma * model_output
    pred_original_sample = latents - sigma * model_output
    delta_t = sigma - sigmas[index + 1]
    std_dev_t = eta * math.sqrt(delta_t)
    score_estimate = -(latents - pred_original_sample * (1 - sigma)) / sigma**2
    log_term = -0.5 * eta**2 * score_estimate
    prev_sample_mean = prev_sample_mean + log_term * dsigma
    if prev_sample is None:
        prev_sample = prev_sample_mean + noise * std_dev_t
    log_prob = ((-((prev_sample.detach().to(torch.float32) - prev_sample_mean.to(torch.float32)) ** 2)
                 / (2 * (std_dev_t**2))) - math.log(std_dev_t) - torch.log(torch.sqrt(2 * torch.as_tensor(math.pi))))
    log_prob = log_prob.mean(dim=tuple(range(1, log_prob.ndim)))
    return prev_sample, pred_original_sample, log_prob


def _left_broadcast(t, shape):
    return t.reshape(t.shape + (1,) * (len(shape) - t.ndim)).broadcast_to(shape)


def _ddpo_get_variance(self, timestep, prev_timestep):
    alpha_prod_t = torch.gather(self.alphas_cumprod, 0, timestep.cpu()).to(timestep.device)
    alpha_prod_t_prev = torch.where(prev_timestep.cpu() >= 0, self.alphas_cumprod.gather(0, prev_timestep.cpu()),
                                    self.final_alpha_cumprod).to(timestep.device)
    beta_prod_t, beta_prod_t_prev = 1 - alpha_prod_t, 1 - alpha_prod_t_prev
    return (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)


def _ddpo_ddim_step(self, model_output, timestep, sample, eta=0.0, prev_sample=None, noise=None):
    prev_timestep = timestep - self.config.num_train_timesteps // self.num_inference_steps
    prev_timestep = torch.clamp(prev_timestep, 0, self.config.num_train_timesteps - 1)
    alpha_prod_t = self.alphas_cumprod.gather(0, timestep.cpu())
    alpha_prod_t_prev = torch.where(prev_timestep.cpu() >= 0, self.alphas_cumprod.gather(0, prev_timestep.cpu()),
                                    self.final_alpha_cumprod)
    alpha_prod_t = _left_broadcast(alpha_prod_t, sample.shape).to(sample.device)
    alpha_prod_t_prev = _left_broadcast(alpha_prod_t_prev, sample.shape).to(sample.device)
    beta_prod_t = 1 - alpha_prod_t
    if self.config.prediction_type == "epsilon":
        pred_original_sample = (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
        pred_epsilon = model_output
    elif self.config.prediction_type == "v_prediction":
        pred_original_sample = (alpha_prod_t**0.5) * sample - (beta_prod_t**0.5) * model_output
        pred_epsilon = (alpha_prod_t**0.5) * model_output + (beta_prod_t**0.5) * sample
    else:
        pred_original_sample = model_output
        pred_epsilon = (sample - alpha_prod_t ** (0.5) * pred_original_sample) / beta_prod_t ** (0.5)
    if self.config.clip_sample:
        pred_original_sample = pred_original_sample.clamp(-self.config.clip_sample_range,
                                                          self.config.clip_sample_range)
    variance = _ddpo_get_variance(self, timestep, prev_timestep)
    std_dev_t = eta * variance ** (0.5)
    std_dev_t = _left_broadcast(std_dev_t, sample.shape).to(sample.device)
    pred_sample_direction = (1 - alpha_prod_t_prev - std_dev_t**2) ** (0.5) * pred_epsilon
    prev_sample_mean = alpha_prod_t_prev ** (0.5) * pred_original_sample + pred_sample_direction
    if prev_sample is None:
        prev_sample = prev_sample_mean + std_dev_t * noise
    log_prob = (-((prev_sample.detach() - prev_sample_mean) ** 2) / (2 * (std_dev_t**2)) - torch.log(std_dev_t)
                - torch.log(torch.sqrt(2 * torch.as_tensor(math.pi))))
    log_prob = log_prob.mean(dim=tuple(range(1, log_prob.ndim)))
    return prev_sample.type(sample.dtype), log_prob, prev_sample_mean


def _inputs(seed: int, shape=(3, 4, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g), torch.randn(shape, generator=g)


@pytest.mark.parametrize("noise_level", [0.7, 1.0])
def test_flow_grpo_sde_step_equals_flow_grpo(noise_level):
    sched = FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER)
    sched.set_timesteps(10)
    assert float(sched.sigmas[0]) == 1.0  # the sigma == 1 guard is exercised at step 0
    for i in range(10):
        v, x, eps = _inputs(i)
        t = sched.timesteps[i].repeat(3)
        ref_prev, ref_lp, ref_mean, ref_std = _flow_grpo_sde_step(sched, v, t, x, noise_level, noise=eps)
        sig, sig_prev = sched.sigmas[i], sched.sigmas[i + 1]
        out = flow_sde_step(v, x, sig, sig_prev, sigma_max=float(sched.sigmas[1]), noise_level=noise_level,
                            noise=eps)
        assert torch.allclose(out.mean, ref_mean, atol=1e-6, rtol=1e-6)
        assert torch.allclose(out.prev_sample, ref_prev, atol=1e-6, rtol=1e-6)
        assert torch.allclose(out.log_prob, ref_lp, atol=1e-5, rtol=1e-6), (i, out.log_prob, ref_lp)
        assert torch.allclose(out.std_dev_t, ref_std.expand_as(out.std_dev_t), rtol=1e-6)
        # scoring a given sample (the training-time call: prev_sample=next_latents)
        other = ref_prev + 0.1 * torch.randn_like(ref_prev)
        _, ref_lp2, _, _ = _flow_grpo_sde_step(sched, v, t, x, noise_level, prev_sample=other)
        lp2 = flow_sde_step(v, x, sig, sig_prev, sigma_max=float(sched.sigmas[1]), noise_level=noise_level,
                            prev_sample=other).log_prob
        assert torch.allclose(lp2, ref_lp2, atol=1e-5, rtol=1e-6)


def test_flow_noise_level_zero_is_the_euler_step():
    sched = FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER)
    sched.set_timesteps(4)
    v, x, _ = _inputs(0)
    out = flow_sde_step(v, x, sched.sigmas[1], sched.sigmas[2], sigma_max=float(sched.sigmas[1]), noise_level=0.0)
    sched._step_index = 1
    euler = sched.step(v, sched.timesteps[1], x, return_dict=False)[0]
    assert torch.equal(out.prev_sample, euler) and (out.log_prob == 0).all()


def test_dance_step_equals_dancegrpo_flux_step():
    sigmas = torch.linspace(1, 0, 17)
    sigmas = 3.0 * sigmas / (1 + 2.0 * sigmas)  # DanceGRPO sd3_time_shift(shift=3, linspace(1, 0, N+1))
    for i in (0, 5, 15):
        v, x, eps = _inputs(10 + i)
        ref_prev, _, ref_lp = _dance_flux_step(v, x, 0.3, sigmas, i, None, noise=eps)
        out = flow_sde_step(v, x, sigmas[i], sigmas[i + 1], sigma_max=float(sigmas[1]), noise_level=0.3,
                            kind="dance", noise=eps)
        assert torch.allclose(out.prev_sample, ref_prev, atol=1e-6, rtol=1e-5)
        assert torch.allclose(out.log_prob, ref_lp, atol=1e-5, rtol=1e-5)
        # DanceGRPO's drift is flow_grpo's with std_dev_t = eta (module docstring)
        grpo_mean = x * (1 + 0.09 / (2 * sigmas[i]) * (sigmas[i + 1] - sigmas[i])) + v * (
            1 + 0.09 * (1 - sigmas[i]) / (2 * sigmas[i])) * (sigmas[i + 1] - sigmas[i])
        assert torch.allclose(out.mean, grpo_mean, atol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("set_alpha_to_one", [False, True])
def test_ddim_step_equals_ddpo(prediction_type, set_alpha_to_one):
    sched = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=set_alpha_to_one, steps_offset=1,
                          prediction_type=prediction_type)
    sched.set_timesteps(10)
    for i in range(10):  # the last step exercises the prev-timestep clamp (t - 100 < 0)
        e, x, eps = _inputs(20 + i)
        t = sched.timesteps[i].repeat(3)
        ref_prev, ref_lp, ref_mean = _ddpo_ddim_step(sched, e, t, x, eta=1.0, noise=eps)
        a_t, a_prev = ddim_alphas(sched.alphas_cumprod, t, 1000, 10)
        out = ddim_step(e, x, a_t, a_prev, eta=1.0, prediction_type=prediction_type, noise=eps)
        assert torch.allclose(out.mean, ref_mean, atol=1e-5, rtol=1e-5)
        assert torch.allclose(out.prev_sample, ref_prev, atol=1e-5, rtol=1e-5)
        assert torch.allclose(out.log_prob, ref_lp, atol=1e-4, rtol=1e-5), (i, out.log_prob, ref_lp)
    # the quirk: the last step uses alphas_cumprod[0], never final_alpha_cumprod (1.0 when set_alpha_to_one)
    _, a_prev_last = ddim_alphas(sched.alphas_cumprod, sched.timesteps[-1:], 1000, 10)
    assert float(a_prev_last) == float(sched.alphas_cumprod[0]) != 1.0


def test_ddim_eta_zero_is_the_diffusers_ddim_step():
    sched = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    sched.set_timesteps(5)
    e, x, _ = _inputs(3)
    for t in sched.timesteps:
        a_t, a_prev = ddim_alphas(sched.alphas_cumprod, t.reshape(1), 1000, 5)
        out = ddim_step(e, x, a_t, a_prev, eta=0.0)
        plain = sched.step(e, t, x, eta=0.0, return_dict=False)[0]
        assert torch.equal(out.prev_sample, plain) and (out.log_prob == 0).all()


def test_gaussian_log_prob_is_the_mean_density():
    x, mean = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    std = torch.tensor([0.5, 2.0]).view(2, 1, 1)
    expected = torch.distributions.Normal(mean, std.expand_as(mean)).log_prob(x).mean(dim=(1, 2))
    assert torch.allclose(gaussian_log_prob(x, mean, std), expected, atol=1e-6)
