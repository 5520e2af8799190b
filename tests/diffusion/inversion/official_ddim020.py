"""Test-side transcription of the code the SmPO / InPO authors ran, to compare mmalign's ``official`` inversion
convention against (written out here, not imported from diffusers, whose ``DDIMInverseScheduler`` changed in 0.22).

* ``DDIMInverseScheduler020``: diffusers v0.20.0 (``huggingface/diffusers`` @ e3380c02,
  ``src/diffusers/schedulers/scheduling_ddim_inverse.py``): ``__init__`` l.201-228 (betas, ``alphas_cumprod``,
  ``initial_alpha_cumprod``), ``set_timesteps`` l.255-294, ``step`` l.296-378 (no eta, returns ``prev_sample``).
* ``ddim_get_variance_020``: ``DDIMScheduler._get_variance`` (``scheduling_ddim.py`` l.256-264 at v0.20.0).
* ``inpo_loop``: ``JaydenLyh/InPO`` @ a9cfc4de ``train.py`` l.993-1014 (DDIM inversion + ``inversion_eta`` term,
  implied noise at ``timesteps[0]``); ``smpo_loop``: ``JaydenLyh/SmPO`` @ 8922d54f ``train.py`` l.1000-1027
  (one ReNoise re-prediction at the same timestep). Both for one batch that shares ``t`` (the official code uses
  ``timesteps[0]``), plus ``batched_loop``: the same loop with a per-sample ``t`` (a sample takes a grid step while
  ``tau < t_i``), which is what mmalign generalises the official code to.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

DEFAULTS_020 = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                    clip_sample=True, set_alpha_to_one=True, steps_offset=0, prediction_type="epsilon",
                    clip_sample_range=1.0, timestep_spacing="leading")


class DDIMInverseScheduler020:
    def __init__(self, config: dict) -> None:
        self.config = SimpleNamespace(**{k: config.get(k, v) for k, v in DEFAULTS_020.items()})
        c = self.config
        if c.beta_schedule == "linear":
            self.betas = torch.linspace(c.beta_start, c.beta_end, c.num_train_timesteps, dtype=torch.float32)
        elif c.beta_schedule == "scaled_linear":
            self.betas = torch.linspace(c.beta_start**0.5, c.beta_end**0.5, c.num_train_timesteps,
                                        dtype=torch.float32) ** 2
        else:
            raise NotImplementedError(c.beta_schedule)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.initial_alpha_cumprod = torch.tensor(1.0) if c.set_alpha_to_one else self.alphas_cumprod[0]
        self.num_inference_steps = None

    def set_timesteps(self, num_inference_steps: int) -> None:
        self.num_inference_steps = num_inference_steps
        if self.config.timestep_spacing == "leading":
            step_ratio = self.config.num_train_timesteps // self.num_inference_steps
            timesteps = (np.arange(0, num_inference_steps) * step_ratio).round().copy().astype(np.int64)
            timesteps += self.config.steps_offset
        elif self.config.timestep_spacing == "trailing":
            step_ratio = self.config.num_train_timesteps / self.num_inference_steps
            timesteps = np.round(np.arange(self.config.num_train_timesteps, 0, -step_ratio)[::-1]).astype(np.int64)
            timesteps -= 1
        else:
            raise ValueError(self.config.timestep_spacing)
        timesteps = np.roll(timesteps, 1)
        timesteps[0] = int(timesteps[1] - step_ratio)
        self.timesteps = torch.from_numpy(timesteps)

    def step(self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor) -> torch.Tensor:
        prev_timestep = timestep + self.config.num_train_timesteps // self.num_inference_steps
        alpha_prod_t = self.alphas_cumprod[timestep] if timestep >= 0 else self.initial_alpha_cumprod
        alpha_prod_t_prev = self.alphas_cumprod[prev_timestep]
        beta_prod_t = 1 - alpha_prod_t
        if self.config.prediction_type == "epsilon":
            pred_original_sample = (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
            pred_epsilon = model_output
        elif self.config.prediction_type == "v_prediction":
            pred_original_sample = (alpha_prod_t**0.5) * sample - (beta_prod_t**0.5) * model_output
            pred_epsilon = (alpha_prod_t**0.5) * model_output + (beta_prod_t**0.5) * sample
        else:
            raise ValueError(self.config.prediction_type)
        if self.config.clip_sample:
            pred_original_sample = pred_original_sample.clamp(-self.config.clip_sample_range,
                                                              self.config.clip_sample_range)
        pred_sample_direction = (1 - alpha_prod_t_prev) ** (0.5) * pred_epsilon
        return alpha_prod_t_prev ** (0.5) * pred_original_sample + pred_sample_direction


def ddim_get_variance_020(alphas_cumprod: torch.Tensor, final_alpha_cumprod: torch.Tensor, timestep: torch.Tensor,
                          prev_timestep: torch.Tensor) -> torch.Tensor:
    alpha_prod_t = alphas_cumprod[timestep]
    alpha_prod_t_prev = alphas_cumprod[prev_timestep] if prev_timestep >= 0 else final_alpha_cumprod
    beta_prod_t = 1 - alpha_prod_t
    beta_prod_t_prev = 1 - alpha_prod_t_prev
    return (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)


def _unet(unet, z, t, cond):
    added = None
    if "pooled" in cond:
        added = {"text_embeds": cond["pooled"], "time_ids": cond["time_ids"]}
    return unet(z, t, encoder_hidden_states=cond["prompt_embeds"], added_cond_kwargs=added).sample


@torch.no_grad()
def inpo_loop(unet, inverse_scheduler, latents, t0: int, cond, inversion_eta: float = 0.1):
    """InPO train.py l.993-1011 for a batch sharing ``t0`` (= ``timesteps[0]``); returns ``noisy_latents``."""
    bsz = latents.shape[0]
    noisy_latents = latents.clone()
    times = inverse_scheduler.timesteps[inverse_scheduler.timesteps < t0]
    final = inverse_scheduler.initial_alpha_cumprod  # DDIMScheduler.final_alpha_cumprod: same config key
    for t in times:
        noise_pred = _unet(unet, noisy_latents, t.repeat([bsz]), cond)
        noisy_latents = inverse_scheduler.step(noise_pred, t, noisy_latents)
        prev_t = t + inverse_scheduler.config.num_train_timesteps // inverse_scheduler.num_inference_steps
        variance = ddim_get_variance_020(inverse_scheduler.alphas_cumprod, final, prev_t, t) ** (0.5)
        noisy_latents += inversion_eta * torch.randn_like(noisy_latents) * variance
    return noisy_latents


@torch.no_grad()
def smpo_loop(unet, inverse_scheduler, latents, t0: int, cond):
    """SmPO train.py l.1000-1024 for a batch sharing ``t0``; returns ``noisy_latents``."""
    bsz = latents.shape[0]
    noisy_latents = latents.clone()
    times = inverse_scheduler.timesteps[inverse_scheduler.timesteps < t0]
    for t in times:
        noise_pred = _unet(unet, noisy_latents, t.repeat([bsz]), cond)
        noisy_latents_1 = inverse_scheduler.step(noise_pred, t, noisy_latents)
        noise_pred_1 = _unet(unet, noisy_latents_1, t.repeat([bsz]), cond)
        noise_pred = (noise_pred + noise_pred_1) / 2
        noisy_latents = inverse_scheduler.step(noise_pred, t, noisy_latents)
    return noisy_latents


@torch.no_grad()
def batched_loop(unet, inverse_scheduler, latents, t: torch.Tensor, cond, *, renoise: bool, inversion_eta: float):
    """The official loop with a per-sample ``t``: at grid step ``tau`` the samples with ``tau < t_i`` move on."""
    z = latents.clone()
    final = inverse_scheduler.initial_alpha_cumprod
    for tau in inverse_scheduler.timesteps:
        act = torch.nonzero(tau < t).flatten()
        if len(act) == 0:
            continue
        zi, ci = z[act], {k: v[act] for k, v in cond.items()}
        e = _unet(unet, zi, tau.repeat([len(act)]), ci)
        new = inverse_scheduler.step(e, tau, zi)
        if renoise:
            new = inverse_scheduler.step((e + _unet(unet, new, tau.repeat([len(act)]), ci)) / 2, tau, zi)
        if inversion_eta:
            prev_t = tau + inverse_scheduler.config.num_train_timesteps // inverse_scheduler.num_inference_steps
            variance = ddim_get_variance_020(inverse_scheduler.alphas_cumprod, final, prev_t, tau) ** (0.5)
            new = new + inversion_eta * torch.randn_like(new) * variance
        z[act] = new
    return z


def official_implied_noise(noisy_latents, start_latents, alphas_cumprod, t0):
    """InPO train.py l.1012-1014 (SmPO l.1025-1027): the implied noise uses ``abar`` of the sampled ``t``."""
    alpha_prod_t = alphas_cumprod[t0]
    beta_prod_t = 1 - alpha_prod_t
    return (noisy_latents - start_latents * alpha_prod_t ** (0.5)) / (beta_prod_t ** (0.5))
