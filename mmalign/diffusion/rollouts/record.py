"""The rollout record: :class:`Rollout` (trajectories, log-probs, step coefficients, images) and
:class:`DenoiserCall` (the conditioning the pipeline passed to its denoiser), with ``select`` / ``cat``. Made by
:func:`mmalign.diffusion.rollouts.rollout.rollout`, consumed by :func:`mmalign.diffusion.rollouts.rollout.step_log_prob` (see that
module for the API)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

_SHARED_KEYS = frozenset({"txt_ids", "img_ids"})  # FLUX position ids: no batch dimension


@dataclass
class DenoiserCall:
    """The keywords the pipeline passed to its denoiser (all but the latents and the timestep), as received
    (before ``generate``'s cast). Batched tensors have ``rows`` rows: ``[uncond (B); cond (B)]`` when ``cfg``."""

    kwargs: dict[str, Any]
    latent_arg: str
    """Name of the latent argument of the denoiser's ``forward`` (``sample`` for UNets, ``hidden_states`` DiTs)."""
    cfg: bool
    batch: int
    """B: the number of samples (rows = 2B under CFG)."""

    @property
    def rows(self) -> int:
        return 2 * self.batch if self.cfg else self.batch

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, Any]:
        def go(key: str, value: Any) -> Any:
            if isinstance(value, dict):
                return {k: go(k, v) for k, v in value.items()}
            if torch.is_tensor(value) and key not in _SHARED_KEYS and value.dim() > 0 and value.shape[0] == self.rows:
                return fn(value)
            return value

        return {k: go(k, v) for k, v in self.kwargs.items()}

    def row_index(self, samples: torch.Tensor) -> torch.Tensor:
        samples = samples.reshape(-1).long()
        return torch.cat([samples, samples + self.batch]) if self.cfg else samples

    def select(self, samples: torch.Tensor) -> DenoiserCall:
        """The call restricted to ``samples`` (B,) long (CFG rows ``[uncond; cond]`` kept)."""
        rows = self.row_index(samples)
        return replace(self, kwargs=self._map(lambda t: t[rows.to(t.device)]), batch=int(samples.numel()))

    def halves(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        if not self.cfg:
            return None
        return (self._map(lambda t: t[: self.batch]), self._map(lambda t: t[self.batch:]))


@dataclass
class Rollout:
    """A batch of sampled trajectories (B = prompts x group_size, T steps)."""

    latents: torch.Tensor
    """(B, T+1, *latent) float32: ``latents[:, 0]`` the initial noise, ``latents[:, j+1]`` the sample step ``j``
    drew (the pipeline's working layout; FLUX packed)."""
    log_probs: torch.Tensor
    """(B, T) float32 log-prob of ``latents[:, j+1]`` under step ``j`` (0 at deterministic steps)."""
    timesteps: torch.Tensor
    """(T,) the scheduler's timesteps."""
    model_timesteps: torch.Tensor
    """(T,) the timestep the denoiser received (FLUX: ``t / 1000``)."""
    step_params: dict[str, torch.Tensor]
    """name -> (B, T) float32 step coefficients (:class:`mmalign.diffusion.rollouts.schedulers.StepRecord`)."""
    stochastic: torch.Tensor
    """(B, T) bool: steps that drew noise (the SDE window)."""
    train_steps: torch.Tensor
    """(B, K) long: the steps to train per sample (``timestep_fraction`` of the stochastic steps, in order)."""
    call: DenoiserCall
    sampler: str
    guidance_scale: float
    prompt_ids: torch.Tensor
    """(B,) long: the prompt of each sample (``i // group_size``; offset per part by :meth:`cat`)."""
    group_size: int
    final_latents: torch.Tensor | None = None
    """(B, C, h, w) float32: each image's final latent in the VAE latent space of
    :func:`mmalign.diffusion.adapter.encode_pixels` (FLUX unpacked) — the ``x0`` of an online-DPO step."""
    images: torch.Tensor | None = None
    """(B, 3, H, W) float32 in [0, 1], decoded in the VAE's dtype in one batch (``decode=True``)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Step options (DDIM ``prediction_type`` / ``clip_sample_range``)."""

    @property
    def batch_size(self) -> int:
        return int(self.latents.shape[0])

    @property
    def num_steps(self) -> int:
        return int(self.log_probs.shape[1])

    def select(self, samples: torch.Tensor | Sequence[int]) -> Rollout:
        """The rollout of ``samples`` only (e.g. to drop zero-std groups)."""
        idx = torch.as_tensor(samples, dtype=torch.long).reshape(-1)
        on = lambda t: t[idx.to(t.device)]  # noqa: E731
        return replace(self, latents=on(self.latents), log_probs=on(self.log_probs),
                       step_params={k: on(v) for k, v in self.step_params.items()}, stochastic=on(self.stochastic),
                       train_steps=on(self.train_steps), call=self.call.select(idx), prompt_ids=on(self.prompt_ids),
                       final_latents=None if self.final_latents is None else on(self.final_latents),
                       images=None if self.images is None else on(self.images))

    @staticmethod
    def cat(parts: Sequence[Rollout]) -> Rollout:
        """One rollout from several calls (same sampler, steps and guidance); prompt ids offset per part."""
        first = parts[0]
        for p in parts[1:]:
            if (p.sampler, p.num_steps, p.guidance_scale, p.call.cfg) != (first.sampler, first.num_steps,
                                                                          first.guidance_scale, first.call.cfg):
                raise ValueError("Rollout.cat: parts differ in sampler / steps / guidance / CFG")
            if not torch.equal(p.model_timesteps.cpu(), first.model_timesteps.cpu()):
                raise ValueError("Rollout.cat: parts have different timestep grids")
            if p.train_steps.shape[1] != first.train_steps.shape[1]:
                raise ValueError("Rollout.cat: parts train different numbers of steps")
        offsets, total = [], 0
        for p in parts:
            offsets.append(total)
            total += int(p.prompt_ids.max()) + 1 if p.batch_size else 0
        cat0 = lambda ts: torch.cat(list(ts), dim=0)  # noqa: E731
        return replace(
            first, latents=cat0(p.latents for p in parts), log_probs=cat0(p.log_probs for p in parts),
            step_params={k: cat0(p.step_params[k] for p in parts) for k in first.step_params},
            stochastic=cat0(p.stochastic for p in parts), train_steps=cat0(p.train_steps for p in parts),
            prompt_ids=cat0(p.prompt_ids + o for p, o in zip(parts, offsets)),
            images=None if any(p.images is None for p in parts) else cat0(p.images for p in parts),
            final_latents=None if any(p.final_latents is None for p in parts) else cat0(
                p.final_latents for p in parts),
            call=_cat_calls([p.call for p in parts]),
        )


def _cat_calls(calls: Sequence[DenoiserCall]) -> DenoiserCall:
    first = calls[0]

    def merge(key: str, values: list[Any]) -> Any:
        v0 = values[0]
        if isinstance(v0, dict):
            return {k: merge(k, [v[k] for v in values]) for k in v0}
        batched = [torch.is_tensor(v) and key not in _SHARED_KEYS and v.dim() > 0 and v.shape[0] == c.rows
                   for v, c in zip(values, calls)]
        if not all(batched):
            return v0
        if first.cfg:
            return torch.cat([v[: c.batch] for v, c in zip(values, calls)]
                             + [v[c.batch:] for v, c in zip(values, calls)])
        return torch.cat(values)

    kwargs = {k: merge(k, [c.kwargs[k] for c in calls]) for k in first.kwargs}
    return replace(first, kwargs=kwargs, batch=sum(c.batch for c in calls))
