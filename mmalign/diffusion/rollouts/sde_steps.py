"""Stochastic sampler steps with their Gaussian log-probabilities (pure tensor math, float32).

Each step maps the denoiser's (guided) output at ``x_t`` to a Gaussian transition ``x_prev ~ N(mean, std^2)``,
draws ``x_prev`` (or takes the given one) and returns ``log N(x_prev | mean, std^2)`` averaged over every
non-batch dimension — as flow_grpo / ddpo-pytorch / DanceGRPO, whose rollouts store this per-step mean. All math
runs in float32 (flow_grpo: "bf16 can overflow here when compute prev_sample_mean"). Coefficients (sigmas, alphas)
are tensors of shape ``(B,)`` or scalars; they are broadcast over the trailing dimensions.

* :func:`flow_sde_step` ``kind="flow_grpo"`` — yifan123/flow_grpo@ac4c86e8cae021841f1fde853d340e0db67690dd
  ``flow_grpo/diffusers_patch/sd3_sde_with_logprob.py`` lines 34-70. With ``sigma = sigmas[i]``,
  ``sigma_prev = sigmas[i+1]``, ``dt = sigma_prev - sigma`` (< 0) and ``sigma_max = sigmas[1]``::

      std_dev_t = sqrt(sigma / (1 - (sigma_max if sigma == 1 else sigma))) * noise_level      (line 47)
      mean      = x (1 + std_dev_t^2 dt / (2 sigma)) + v (1 + std_dev_t^2 (1 - sigma) / (2 sigma)) dt   (line 50)
      x_prev    = mean + std_dev_t sqrt(-dt) eps                                                 (line 59)

  ``noise_level = 0`` is the plain Euler ODE step ``x + v dt`` (deterministic; the log-prob is undefined there and
  is returned as 0 — flow_grpo's formula gives NaN; such steps are never trained).
* :func:`flow_sde_step` ``kind="dance"`` — XueZeyue/DanceGRPO@15cc71d53cc2e6e18a68ee607d5fb6ba9a99e344
  ``fastvideo/train_grpo_flux.py`` ``flux_step`` lines 131-170 (``sde_solver=True``): the same drift with the
  constant diffusion coefficient ``eta`` (passed as ``noise_level``) in place of ``std_dev_t`` —
  ``mean = x + v dt - 0.5 eta^2 score dt`` with ``score = -(x - x0_hat (1 - sigma)) / sigma^2``,
  ``x0_hat = x - sigma v``, which is algebraically flow_grpo's mean with ``std_dev_t = eta`` — and
  ``std = eta sqrt(sigma - sigma_prev)``. Computed here from DanceGRPO's own expression.
* :func:`ddim_step` — kvablack/ddpo-pytorch@1958463f020112c9a7bc85768d296daacc2e1b4b
  ``ddpo_pytorch/diffusers_patch/ddim_with_logprob.py`` lines 92-190: ``x0_hat`` from the prediction type
  (epsilon / sample / v_prediction), optional ``clip_sample`` clamp, ``std = eta sqrt(variance(t, t_prev))`` with
  ``variance = (1 - abar_prev) / (1 - abar_t) (1 - abar_t / abar_prev)``,
  ``mean = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - std^2) eps_hat``. The caller passes ``abar_t`` and
  ``abar_prev``; :func:`ddim_alphas` reproduces ddpo's quirk: ``t_prev = t - T // N`` is clamped to
  ``[0, T-1]`` *before* the ``>= 0`` test (line 97), so ``final_alpha_cumprod`` is never used (same as diffusers
  for SD1.x, which ships ``set_alpha_to_one = False``). ``eta = 0`` is plain DDIM (log-prob 0, never trained).

:class:`StepOutput` ``std_dev_t`` is the SDE coefficient that flow_grpo's KL divides by
(``scripts/train_sd3.py`` line 895: ``std_dev_t``, *not* the transition std ``std_dev_t sqrt(-dt)``); for DDIM
both are the transition std (ddpo has no KL term).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

FLOW_SDE_KINDS = ("flow_grpo", "dance")
SAMPLERS = (*FLOW_SDE_KINDS, "ddim")
"""Names of the stochastic samplers: ``flow_grpo`` / ``dance`` (flow-matching models), ``ddim`` (DDPM UNets)."""

_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


@dataclass
class StepOutput:
    """One stochastic step: ``prev_sample`` (float32, shape of the input), ``log_prob`` (B,) float32 (mean over
    non-batch dims; 0 where ``std == 0``), ``mean`` (float32, the transition mean; differentiable),
    ``std`` (B, 1, ...) the transition std, ``std_dev_t`` (B, 1, ...) the SDE coefficient of flow_grpo's KL."""

    prev_sample: torch.Tensor
    log_prob: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    std_dev_t: torch.Tensor


def _bcast(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32, device=like.device)
    if t.dim() == 0:
        t = t.expand(like.shape[0])
    return t.reshape(-1, *[1] * (like.dim() - 1))


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``mean over non-batch dims of log N(x | mean, std^2)`` in float32, ``x`` detached (as the official code);
    rows whose ``std`` is 0 (deterministic steps) give 0."""
    x = x.detach().float()
    safe = torch.where(std > 0, std, torch.ones_like(std))
    lp = -((x - mean) ** 2) / (2 * safe**2) - torch.log(safe) - _LOG_SQRT_2PI
    lp = lp.mean(dim=tuple(range(1, lp.dim())))
    return torch.where(std.flatten() > 0, lp, torch.zeros_like(lp))


def _draw(mean: torch.Tensor, std: torch.Tensor, prev_sample: torch.Tensor | None, noise: torch.Tensor | None,
          generator: torch.Generator | None) -> torch.Tensor:
    if prev_sample is not None:
        return prev_sample.float()
    if bool((std == 0).all()):
        return mean
    if noise is None:
        from diffusers.utils.torch_utils import randn_tensor

        noise = randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=torch.float32)
    return mean + std * noise.float()


def flow_sde_step(velocity: torch.Tensor, sample: torch.Tensor, sigma: torch.Tensor | float,
                  sigma_prev: torch.Tensor | float, *, sigma_max: torch.Tensor | float,
                  noise_level: torch.Tensor | float = 0.7,
                  kind: str = "flow_grpo", prev_sample: torch.Tensor | None = None,
                  noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> StepOutput:
    """Flow-matching SDE step (module docstring). ``velocity``: the (guided) model output at ``sample``;
    ``sigma`` / ``sigma_prev``: ``sigmas[i]`` / ``sigmas[i+1]`` per row or scalar; ``sigma_max``: ``sigmas[1]`` of
    the sampling grid (the sigma = 1 guard); ``noise_level``: flow_grpo's ``noise_level`` or DanceGRPO's ``eta``;
    ``prev_sample``: score this sample instead of drawing one; ``noise``: the standard-normal draw to use."""
    if kind not in FLOW_SDE_KINDS:
        raise ValueError(f"unknown flow SDE kind '{kind}' ({', '.join(FLOW_SDE_KINDS)})")
    v, x = velocity.float(), sample.float()
    s, s_prev = _bcast(sigma, x), _bcast(sigma_prev, x)
    level = _bcast(noise_level, x)
    dt = s_prev - s
    if kind == "flow_grpo":
        std_dev_t = torch.sqrt(s / (1 - torch.where(s == 1, _bcast(sigma_max, x), s))) * level
        mean = x * (1 + std_dev_t**2 / (2 * s) * dt) + v * (1 + std_dev_t**2 * (1 - s) / (2 * s)) * dt
        std = std_dev_t * torch.sqrt(-dt)
    else:
        x0_hat = x - s * v
        score = -(x - x0_hat * (1 - s)) / s**2
        mean = x + dt * v + (-0.5 * level**2 * score) * dt
        std_dev_t = level.expand_as(s).clone()
        std = level * torch.sqrt(s - s_prev)
    prev = _draw(mean, std, prev_sample, noise, generator)
    return StepOutput(prev, gaussian_log_prob(prev, mean, std), mean, std, std_dev_t)


def ddim_alphas(alphas_cumprod: torch.Tensor, timestep: torch.Tensor, num_train_timesteps: int,
                num_inference_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(abar_t, abar_prev)`` float32 for integer ``timestep`` (B,) as ddpo-pytorch's ``ddim_step_with_logprob``
    lines 93-105: ``t_prev = clamp(t - T // N, 0, T - 1)`` (the clamp before the ``>= 0`` test: never
    ``final_alpha_cumprod``)."""
    t = timestep.long().reshape(-1).cpu()
    prev = torch.clamp(t - num_train_timesteps // num_inference_steps, 0, num_train_timesteps - 1)
    table = alphas_cumprod.float().cpu()
    return table.gather(0, t).to(timestep.device), table.gather(0, prev).to(timestep.device)


def ddim_step(model_output: torch.Tensor, sample: torch.Tensor, alpha_prod_t: torch.Tensor | float,
              alpha_prod_t_prev: torch.Tensor | float, *, eta: torch.Tensor | float = 1.0,
              prediction_type: str = "epsilon", clip_sample_range: float | None = None,
              prev_sample: torch.Tensor | None = None, noise: torch.Tensor | None = None,
              generator: torch.Generator | None = None) -> StepOutput:
    """DDIM step with ``eta`` and its Gaussian log-prob (module docstring). ``alpha_prod_t`` /
    ``alpha_prod_t_prev``: ``abar`` at ``t`` and ``t_prev`` (:func:`ddim_alphas`); ``clip_sample_range``: the
    scheduler's ``clip_sample_range`` when its ``clip_sample`` is on (SD: off)."""
    e, x = model_output.float(), sample.float()
    a_t, a_prev = _bcast(alpha_prod_t, x), _bcast(alpha_prod_t_prev, x)
    b_t = 1 - a_t
    if prediction_type == "epsilon":
        x0, eps = (x - b_t**0.5 * e) / a_t**0.5, e
    elif prediction_type == "sample":
        x0 = e
        eps = (x - a_t**0.5 * x0) / b_t**0.5
    elif prediction_type == "v_prediction":
        x0, eps = a_t**0.5 * x - b_t**0.5 * e, a_t**0.5 * e + b_t**0.5 * x
    else:
        raise ValueError(f"unknown prediction_type '{prediction_type}' (epsilon, sample, v_prediction)")
    if clip_sample_range is not None:
        x0 = x0.clamp(-clip_sample_range, clip_sample_range)
    variance = (1 - a_prev) / b_t * (1 - a_t / a_prev)
    std = _bcast(eta, x) * variance**0.5
    mean = a_prev**0.5 * x0 + (1 - a_prev - std**2) ** 0.5 * eps
    prev = _draw(mean, std, prev_sample, noise, generator)
    return StepOutput(prev, gaussian_log_prob(prev, mean, std), mean, std, std)


def step_from_params(kind: str, model_output: torch.Tensor, sample: torch.Tensor, params: dict[str, torch.Tensor],
                     prev_sample: torch.Tensor | None = None, generator: torch.Generator | None = None,
                     prediction_type: str = "epsilon", clip_sample_range: float | None = None) -> StepOutput:
    """The step of sampler ``kind`` with coefficients ``params`` (as :class:`StepRecord`; (n,) tensors)."""
    if kind in FLOW_SDE_KINDS:
        return flow_sde_step(model_output, sample, params["sigma"], params["sigma_prev"],
                             sigma_max=params["sigma_max"], noise_level=params["noise_level"],
                             kind=kind, prev_sample=prev_sample, generator=generator)
    if kind == "ddim":
        return ddim_step(model_output, sample, params["alpha_prod_t"], params["alpha_prod_t_prev"],
                         eta=params["noise_level"], prediction_type=prediction_type,
                         clip_sample_range=clip_sample_range, prev_sample=prev_sample, generator=generator)
    raise ValueError(f"unknown sampler '{kind}' ({', '.join(SAMPLERS)})")


def step_options(config: Any) -> dict[str, Any]:
    """DDIM options read from a scheduler config: ``prediction_type`` and ``clip_sample_range`` (when
    ``clip_sample``). Thresholding (not used by SD / SDXL) is refused."""
    if getattr(config, "thresholding", False):
        raise ValueError("DDIM rollouts: the scheduler's thresholding is not supported")
    clip = float(config.clip_sample_range) if getattr(config, "clip_sample", False) else None
    return {"prediction_type": config.prediction_type, "clip_sample_range": clip}
