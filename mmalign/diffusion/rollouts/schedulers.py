"""Schedulers that take the stochastic step of :mod:`mmalign.diffusion.rollouts.sde_steps` and record it, so that a rollout
runs on the pipeline's own denoising loop (``mmalign.diffusion.sampling.generate``; no second sampler).

:func:`rollout_scheduler` builds one from the pipeline's scheduler config — :class:`RolloutFlowScheduler`
(``FlowMatchEulerDiscreteScheduler``: SD3 / FLUX) or :class:`RolloutDDIMScheduler` (``DDIMScheduler``: SD / SDXL,
as ddpo-pytorch swaps ``DDIMScheduler.from_config`` in) — and :func:`swapped_scheduler` holds it in the pipeline
for the call. The pipeline calls ``scheduler.step(noise_pred, t, latents)``; the override draws ``x_prev`` with
its own generator (the pipeline's ``eta`` / ``generator`` step kwargs are not accepted, so never passed), in
float32, with the per-step ``noise_levels`` (0 outside an SDE window: the plain ODE / DDIM step) and appends a
:class:`StepRecord`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput
from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteSchedulerOutput

from mmalign.diffusion.rollouts.sde_steps import (
    FLOW_SDE_KINDS,
    SAMPLERS,
    ddim_alphas,
    step_from_params,
    step_options,
)


@dataclass
class StepRecord:
    """What one step recorded: the sample it started from, the sample drawn, its log-prob (B,) and the step's
    coefficients (name -> (B,) float32: ``sigma``, ``sigma_prev``, ``sigma_max``, ``noise_level`` for flow;
    ``alpha_prod_t``, ``alpha_prod_t_prev``, ``noise_level`` (eta) for DDIM)."""

    sample: torch.Tensor
    prev_sample: torch.Tensor
    log_prob: torch.Tensor
    params: dict[str, torch.Tensor]


@dataclass
class _Recording:
    kind: str
    noise_levels: torch.Tensor
    """(B, T) float32: the noise level of every (sample, step)."""
    generator: torch.Generator | None
    records: list[StepRecord] = field(default_factory=list)


class _RecordingMixin:
    _recording: _Recording | None = None

    def start_recording(self, kind: str, noise_levels: torch.Tensor, generator: torch.Generator | None) -> None:
        self._recording = _Recording(kind, noise_levels.float(), generator)

    def stop_recording(self) -> list[StepRecord]:
        recording, self._recording = self._recording, None
        return [] if recording is None else recording.records

    def _record(self, index: int, model_output: torch.Tensor, sample: torch.Tensor,
                params: dict[str, torch.Tensor]) -> torch.Tensor:
        rec = self._recording
        if rec is None:
            raise RuntimeError("a rollout scheduler steps only inside swapped_scheduler(...) / rollout(...)")
        if index >= rec.noise_levels.shape[1]:
            raise RuntimeError(f"step {index} of a rollout planned for {rec.noise_levels.shape[1]} steps")
        n = sample.shape[0]
        params = {k: torch.as_tensor(v, dtype=torch.float32, device=sample.device).reshape(-1).expand(n).clone()
                  for k, v in params.items()}
        params["noise_level"] = rec.noise_levels[:, index].to(sample.device)
        out = step_from_params(rec.kind, model_output, sample, params, generator=rec.generator,
                               **self._step_options())
        rec.records.append(StepRecord(sample.float(), out.prev_sample, out.log_prob, params))
        return out.prev_sample

    def _step_options(self) -> dict[str, Any]:
        return {}


class RolloutFlowScheduler(_RecordingMixin, FlowMatchEulerDiscreteScheduler):
    """``FlowMatchEulerDiscreteScheduler`` whose step is :func:`flow_sde_step` (``flow_grpo`` or ``dance``)."""

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, return_dict: bool = True,
             **_unused: Any):
        if self.step_index is None:
            self._init_step_index(timestep)
        i = self.step_index
        params = {"sigma": self.sigmas[i], "sigma_prev": self.sigmas[i + 1], "sigma_max": self.sigmas[1]}
        prev = self._record(i, model_output, sample, params)
        self._step_index += 1
        return FlowMatchEulerDiscreteSchedulerOutput(prev_sample=prev) if return_dict else (prev,)


class RolloutDDIMScheduler(_RecordingMixin, DDIMScheduler):
    """``DDIMScheduler`` whose step is :func:`ddim_step` with eta (ddpo-pytorch's, prev-timestep clamp included)."""

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, return_dict: bool = True,
             **_unused: Any):
        t = torch.as_tensor(timestep, device=self.timesteps.device).reshape(-1)[:1]
        index = int((self.timesteps == t).nonzero()[0, 0])
        a_t, a_prev = ddim_alphas(self.alphas_cumprod, t, self.config.num_train_timesteps, self.num_inference_steps)
        prev = self._record(index, model_output, sample, {"alpha_prod_t": a_t, "alpha_prod_t_prev": a_prev})
        return DDIMSchedulerOutput(prev_sample=prev, pred_original_sample=None) if return_dict else (prev,)

    def _step_options(self) -> dict[str, Any]:
        return step_options(self.config)


def rollout_scheduler(pipe: Any, sampler: str) -> _RecordingMixin:
    """A recording scheduler built from ``pipe.scheduler.config`` for ``sampler`` (``flow_grpo`` / ``dance`` on a
    flow-matching pipeline, ``ddim`` on a UNet pipeline)."""
    flow = isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    if sampler in FLOW_SDE_KINDS:
        if not flow:
            raise ValueError(f"sampler '{sampler}' is for flow-matching pipelines; {type(pipe).__name__} uses "
                             f"{type(pipe.scheduler).__name__} (use 'ddim')")
        return RolloutFlowScheduler.from_config(pipe.scheduler.config)
    if sampler == "ddim":
        if flow:
            raise ValueError(f"sampler 'ddim' is for DDPM UNet pipelines; {type(pipe).__name__} is flow-matching "
                             f"(use 'flow_grpo' or 'dance')")
        return RolloutDDIMScheduler.from_config(pipe.scheduler.config)
    raise ValueError(f"unknown sampler '{sampler}' ({', '.join(SAMPLERS)})")


@contextmanager
def swapped_scheduler(pipe: Any, scheduler: Any) -> Iterator[Any]:
    """``pipe.scheduler`` is ``scheduler`` while held; the original is restored afterwards."""
    original = pipe.scheduler
    pipe.scheduler = scheduler
    try:
        yield scheduler
    finally:
        pipe.scheduler = original
