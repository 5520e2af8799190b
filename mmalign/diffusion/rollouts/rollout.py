"""Rollouts with per-step log-probabilities on the one sampling path, and their training-time recomputation.

API (stable; the online methods build on it)::

    rollout(pipe, embeds, *, group_size, num_inference_steps, guidance_scale, negative=None, sampler=None,
            noise_level=None, timestep_fraction=1.0, sde_window=None, sde_window_range=None,
            same_noise_per_group=False, generator=None, height=None, width=None, decode=True,
            autocast=nullcontext, **pipe_kwargs) -> Rollout
    step_log_prob(denoiser, rollout, samples, steps, *, detach_uncond=False, cfg=True) -> StepOutput  # grad
    reference_step_log_prob(denoiser, rollout, samples, steps) -> StepOutput   # LoRA adapters off, no grad
    Rollout.cat([r1, r2, ...]) -> Rollout;  Rollout.select(samples) -> Rollout
    Rollout fields: latents (B, T+1, ...), log_probs (B, T), timesteps (T,), model_timesteps (T,), step_params
    {name: (B, T)}, stochastic (B, T), train_steps (B, K), call (DenoiserCall), sampler, guidance_scale,
    prompt_ids (B,), group_size, final_latents (B, C, h, w), images (B, 3, H, W) in [0, 1], options

Typical GRPO use (:mod:`mmalign.objectives.grpo`)::

    r = rollout(pipe, encode_text(parts, prompts, device), negative=encode_text(parts, [""], device),
                group_size=G, num_inference_steps=10, guidance_scale=4.5, generator=g)
    adv = group_advantages(reward(r.images, [prompts[i] for i in r.prompt_ids]).total, r.prompt_ids)
    r = r.select(adv.keep.nonzero().reshape(-1));  A = adv.advantages[adv.keep]
    for j in range(r.train_steps.shape[1]):                       # flow_grpo: steps in order
        steps = r.train_steps[:, j]
        new = step_log_prob(parts.denoiser, r, idx, steps[idx], detach_uncond=True)      # idx: a micro-batch
        ref = reference_step_log_prob(parts.denoiser, r, idx, steps[idx]) if beta > 0 else None
        loss, metrics = grpo_loss(new.log_prob, r.log_probs[idx, steps[idx]], A[idx], clip_range=1e-4,
                                  adv_clip_max=5, beta=beta, mean=new.mean, mean_ref=ref.mean if ref else None,
                                  std_dev_t=new.std_dev_t)

How: :func:`rollout` swaps a recording scheduler (:mod:`mmalign.diffusion.rollouts.schedulers`) into the diffusers
pipeline and calls :func:`mmalign.diffusion.sampling.generate` with cached prompt embeddings (the pipeline's own
denoising loop: CFG, SDXL micro-conditioning, FLUX packing / guidance embedding / ids). For the call, a forward
pre-hook on the denoiser records the conditioning it receives (every keyword but the latents and the timestep,
before ``generate``'s dtype cast) and the timestep of every step, and a forward hook casts the denoiser's output
to float32, so CFG combines in float32 (flow_grpo combines in the autocast dtype). The latents of the loop stay in
float32 (embeddings are passed in float32; ``generate`` casts them to the denoiser's dtype), so the stored
trajectory is exactly what each step consumed. :func:`step_log_prob` replays one step for chosen
``(sample, step)`` pairs: the same denoiser keywords (rows of the chosen samples; ``[uncond; cond]`` under CFG),
cast to the denoiser's dtype exactly as ``generate`` does, the same float32 CFG and the same step function with the
recorded coefficients — so the first inner step's ratio is 1 up to the float effects of a different batch
composition (tested in fp32 and bf16, no autocast).

Samplers (``sampler``): ``flow_grpo`` (default for SD3 / FLUX; ``noise_level`` default 0.7), ``dance`` (DanceGRPO's
constant ``eta``, default 0.3) and ``ddim`` (SD / SDXL; ``eta`` default 1.0) — formulas and sources in
:mod:`mmalign.diffusion.rollouts.sde_steps`. ``noise_level=0`` is the plain ODE / DDIM sampler (the pipeline's own output).
Differences from the official samplers, on purpose: the sigma grid is the pipeline's (``set_timesteps``; flow_grpo
uses the same, DanceGRPO its own ``sd3_time_shift(linspace(1, 0, N+1))`` and ``int(sigma*1000)/1000`` timesteps);
CFG in float32.

Options: ``group_size`` G images per prompt in one batch (sample ``i`` belongs to prompt ``i // G``;
``same_noise_per_group``: DanceGRPO's ``init_same_noise``); ``num_inference_steps`` for training rollouts may be fewer
than for evaluation; ``timestep_fraction``: flow_grpo's ``train.timestep_fraction`` — the first
``int(K * fraction)`` of the K stochastic steps are trained (``scripts/train_sd3.py`` line 345; 0.99 of 10 -> 9;
DanceGRPO's SD script trains ``int((T - 1) * fraction)``, ``fastvideo/train_grpo_sd.py`` line 86: choose the
fraction accordingly);
``sde_window`` / ``sde_window_range``: Flow-GRPO-Fast (flow_grpo ``sd3_pipeline_with_logprob_fast.py``) — only
``sde_window`` consecutive steps starting at ``start ~ U{lo, hi - size}`` (drawn from ``generator``, one window per
call) are stochastic, the others ODE steps (log-prob 0, never trained).

FLUX: no true CFG (the guidance-distilled checkpoints use the guidance embedding, ``guidance_scale``; DanceGRPO
likewise); latents are stored in the pipeline's packed layout ``(B, T+1, h*w/4, 4C)`` (the log-prob is a mean over
elements, layout-free).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from typing import Any

import torch

from mmalign.diffusion.rollouts.record import DenoiserCall, Rollout
from mmalign.diffusion.rollouts.sde_steps import SAMPLERS, StepOutput, step_from_params, step_options
from mmalign.diffusion.sampling import _cast_floats, decode_latents, denoiser, generate
from mmalign.reference import adapters_disabled
from mmalign.unwrap import unwrap

DEFAULT_NOISE_LEVEL = {"flow_grpo": 0.7, "dance": 0.3, "ddim": 1.0}
"""flow_grpo ``config/grpo.py`` ``sample.noise_level``; DanceGRPO ``--eta`` (FLUX); ddpo-pytorch ``sample.eta``."""

__all__ = ["DEFAULT_NOISE_LEVEL", "DenoiserCall", "Rollout", "default_sampler", "reference_step_log_prob", "rollout",
           "step_log_prob"]


@contextmanager
def _capture(module: torch.nn.Module, store: dict[str, Any]) -> Iterator[None]:
    """Record the first call's keywords (named by ``forward``'s signature) and every call's timestep; cast the
    outputs to float32."""
    signature = inspect.signature(module.forward)
    store["timesteps"] = []

    def pre(_m, args, kwargs):
        bound = signature.bind_partial(*args, **kwargs).arguments
        if "kwargs" in bound and isinstance(bound["kwargs"], dict) and "kwargs" not in kwargs:
            bound.update(bound.pop("kwargs"))
        latent_arg = next(iter(signature.parameters))
        store["timesteps"].append(torch.as_tensor(bound["timestep"]).reshape(-1)[0].clone())
        if "call" not in store:
            store["rows"] = int(bound[latent_arg].shape[0])
            store["latent_arg"] = latent_arg
            store["call"] = {k: v for k, v in bound.items() if k not in (latent_arg, "timestep", "return_dict")}

    def post(_m, _args, output):
        return _cast_floats(output, torch.float32)

    handles = [module.register_forward_pre_hook(pre, with_kwargs=True), module.register_forward_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _pipeline_embeds(embeds: dict[str, torch.Tensor], prefix: str, repeat: int, rows: int) -> dict[str, torch.Tensor]:
    names = {"prompt_embeds": "prompt_embeds", "pooled": "pooled_prompt_embeds"}
    out = {}
    for key, value in embeds.items():
        if key not in names:
            raise ValueError(f"rollout embeds: unknown key '{key}' (prompt_embeds, pooled)")
        value = value.float()
        value = value.repeat_interleave(repeat, dim=0) if value.shape[0] * repeat == rows else value
        if value.shape[0] == 1 and rows > 1:
            value = value.repeat(rows, *[1] * (value.dim() - 1))
        if value.shape[0] != rows:
            raise ValueError(f"rollout {prefix}{key}: {value.shape[0]} rows, expected 1 or {rows // repeat}")
        out[prefix + names[key]] = value
    return out


def _noise_plan(batch: int, steps: int, level: float, window: int | None, window_range: tuple[int, int] | None,
                generator: torch.Generator | None) -> torch.Tensor:
    levels = torch.full((batch, steps), float(level))
    if window is None:
        return levels
    lo, hi = window_range if window_range is not None else (0, steps)
    if not (0 <= lo and hi <= steps and 1 <= window <= hi - lo):
        raise ValueError(f"sde_window {window} must fit in sde_window_range [{lo}, {hi}) of {steps} steps")
    device = generator.device if generator is not None else "cpu"
    start = int(torch.randint(lo, hi - window + 1, (1,), generator=generator, device=device))
    levels[:, :start] = 0.0
    levels[:, start + window:] = 0.0
    return levels


def _train_steps(stochastic: torch.Tensor, fraction: float) -> torch.Tensor:
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"timestep_fraction must be in (0, 1], got {fraction}")
    rows = []
    for row in stochastic:
        idx = row.nonzero().reshape(-1)
        rows.append(idx[: int(len(idx) * fraction)])
    if len({len(r) for r in rows}) > 1:
        raise ValueError("rollout: samples have different numbers of stochastic steps")
    return torch.stack(rows) if rows else torch.zeros((0, 0), dtype=torch.long)


def default_sampler(pipe: Any) -> str:
    """``flow_grpo`` for flow-matching pipelines (SD3 / FLUX), ``ddim`` for UNet pipelines (SD / SDXL)."""
    return "ddim" if getattr(pipe, "unet", None) is not None else "flow_grpo"


@torch.no_grad()
def rollout(pipe: Any, embeds: dict[str, torch.Tensor], *, group_size: int, num_inference_steps: int,
            guidance_scale: float, negative: dict[str, torch.Tensor] | None = None, sampler: str | None = None,
            noise_level: float | None = None, timestep_fraction: float = 1.0, sde_window: int | None = None,
            sde_window_range: tuple[int, int] | None = None, same_noise_per_group: bool = False,
            generator: torch.Generator | None = None, height: int | None = None, width: int | None = None,
            decode: bool = True, decode_batch_size: int | None = None, autocast: Callable[[], Any] = nullcontext,
            **pipe_kwargs: Any) -> Rollout:
    """Sample ``group_size`` trajectories per prompt with per-step log-probs (module docstring).

    ``embeds``: cached conditioning of P prompts as :func:`mmalign.diffusion.adapter.encode_text` returns it
    (``prompt_embeds`` (P, L, D), ``pooled`` (P, D') for SDXL / SD3 / FLUX); ``negative``: the same for the
    unconditional branch (1 or P rows; e.g. ``encode_text(parts, [""])``), None = the pipeline's default (SD / SD3
    encode ``""``, SDXL zeros). ``generator`` draws the initial noise, the SDE window and every step's noise.
    ``decode_batch_size``: decode the final latents in chunks of this many (default: all at once). ``pipe_kwargs``
    go to the pipeline (e.g. ``max_sequence_length``; ``sigmas=linspace(1, 0, N+1)[:-1]`` on SD3 gives DanceGRPO's
    shifted grid, the scheduler applying the shift)."""
    sampler = sampler or default_sampler(pipe)
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler '{sampler}' ({', '.join(SAMPLERS)})")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    level = DEFAULT_NOISE_LEVEL[sampler] if noise_level is None else float(noise_level)
    if level < 0:
        raise ValueError(f"noise_level must be >= 0, got {level}")
    if "latents" in pipe_kwargs or "num_images_per_prompt" in pipe_kwargs:
        raise ValueError("rollout draws its own latents and repeats prompts by group_size")
    is_flux = type(pipe).__name__ == "FluxPipeline"
    if is_flux and (negative is not None or pipe_kwargs.get("true_cfg_scale", 1.0) > 1.0):
        raise ValueError("FLUX rollouts use the guidance embedding (guidance_scale); true CFG is not supported")
    prompts = int(embeds["prompt_embeds"].shape[0])
    batch = prompts * group_size
    net = denoiser(pipe)
    device = net.device
    kwargs = _pipeline_embeds(embeds, "", group_size, batch)
    if negative is not None:
        kwargs.update(_pipeline_embeds(negative, "negative_", group_size, batch))
    kwargs = {k: v.to(device) for k, v in kwargs.items()}
    size = (getattr(pipe, "default_sample_size", None) or net.config.sample_size) * pipe.vae_scale_factor
    height, width = height or size, width or size
    latents = _initial_latents(pipe, prompts if same_noise_per_group else batch, height, width, device, generator)
    if same_noise_per_group:
        latents = latents.repeat_interleave(group_size, dim=0)
    from mmalign.diffusion.rollouts.schedulers import rollout_scheduler, swapped_scheduler

    scheduler = rollout_scheduler(pipe, sampler)
    scheduler.start_recording(sampler, _noise_plan(batch, num_inference_steps, level, sde_window, sde_window_range,
                                                   generator), generator)
    store: dict[str, Any] = {}
    try:
        with swapped_scheduler(pipe, scheduler), _capture(net, store):
            final = generate(pipe, None, output_type="latent", autocast=autocast, latents=latents,
                             num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                             height=height, width=width, **kwargs, **pipe_kwargs)
    finally:
        records = scheduler.stop_recording()
    return _assemble(pipe, sampler, scheduler, records, store, final, batch, group_size, guidance_scale,
                     timestep_fraction, decode, decode_batch_size)


def _initial_latents(pipe: Any, n: int, height: int, width: int, device: torch.device,
                     generator: torch.Generator | None) -> torch.Tensor:
    net = denoiser(pipe)
    channels = net.config.in_channels // (4 if type(pipe).__name__ == "FluxPipeline" else 1)
    out = pipe.prepare_latents(n, channels, height, width, torch.float32, device, generator)
    latents = out[0] if isinstance(out, tuple) else out
    return latents.float() / float(getattr(pipe.scheduler, "init_noise_sigma", 1.0))


def _assemble(pipe: Any, sampler: str, scheduler: Any, records: list[Any], store: dict[str, Any],
              final: torch.Tensor, batch: int, group_size: int, guidance_scale: float, fraction: float,
              decode: bool, decode_batch_size: int | None) -> Rollout:
    steps = len(records)
    if steps == 0 or len(store.get("timesteps", [])) != steps:
        raise RuntimeError(f"rollout: {len(store.get('timesteps', []))} denoiser calls for {steps} steps "
                           "(one call per step expected)")
    rows = store["rows"]
    if rows not in (batch, 2 * batch):
        raise RuntimeError(f"rollout: the denoiser saw {rows} rows for {batch} samples")
    latents = torch.stack([records[0].sample] + [r.prev_sample for r in records], dim=1)
    params = {k: torch.stack([r.params[k] for r in records], dim=1) for k in records[0].params}
    stochastic = params["noise_level"] > 0
    images = None
    if decode:
        chunks = final.split(decode_batch_size or max(1, batch))
        images = torch.cat([(decode_latents(pipe, c) / 2 + 0.5).clamp(0, 1) for c in chunks])
    options = step_options(scheduler.config) if sampler == "ddim" else {}
    return Rollout(
        latents=latents, log_probs=torch.stack([r.log_prob for r in records], dim=1),
        timesteps=scheduler.timesteps.clone(), model_timesteps=torch.stack(store["timesteps"]),
        step_params=params, stochastic=stochastic, train_steps=_train_steps(stochastic.cpu(), fraction).to(
            latents.device),
        call=DenoiserCall(store["call"], store["latent_arg"], rows == 2 * batch, batch), sampler=sampler,
        guidance_scale=float(guidance_scale),
        prompt_ids=torch.arange(batch // group_size, device=latents.device).repeat_interleave(group_size),
        group_size=group_size, final_latents=final.float(), images=images, options=options,
    )


def _as_index(value: torch.Tensor | int | Sequence[int], n: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.long, device=device).reshape(-1)
    return t.expand(n).clone() if t.numel() == 1 and n > 1 else t


def step_log_prob(model: torch.nn.Module, rollout: Rollout, samples: torch.Tensor | Sequence[int],
                  steps: torch.Tensor | int | Sequence[int], *, detach_uncond: bool = False,
                  cfg: bool = True) -> StepOutput:
    """Recompute step ``steps`` (one per sample, or one for all) of the trajectories ``samples`` under ``model``
    (the policy — gradients flow; wrapped modules are fine): the log-prob of the recorded ``x_{j+1}`` given the
    recorded ``x_j``, with the rollout's conditioning, CFG (``detach_uncond``: flow_grpo's
    ``noise_pred_uncond.detach()``, ``scripts/train_sd3.py`` line 190; DDPO keeps it; ``cfg=False``: the
    conditional branch alone, flow_grpo / DDPO ``train.cfg = False`` — then the ratio is not 1 for a CFG rollout)
    and step coefficients.
    Returns :class:`~mmalign.diffusion.rollouts.sde_steps.StepOutput` (``log_prob`` (n,), ``mean`` and ``std_dev_t`` for the
    KL). A rollout made under ``autocast`` must be recomputed under the same autocast (then the ratio is 1; tiny
    SD3 / FLUX without it: |delta log p| ~ 5e-4)."""
    device = rollout.latents.device
    samples = torch.as_tensor(samples, dtype=torch.long, device=device).reshape(-1)
    steps = _as_index(steps, samples.numel(), device)
    x = rollout.latents[samples, steps]
    x_next = rollout.latents[samples, steps + 1]
    call = rollout.call.select(samples)
    if call.cfg and not cfg:
        _, cond_kwargs = call.halves()
        call = replace(call, kwargs=cond_kwargs, cfg=False)
    dtype = unwrap(model).dtype
    timestep = rollout.model_timesteps.to(device)[steps]
    latent_in = x
    if call.cfg:
        latent_in, timestep = torch.cat([x, x]), torch.cat([timestep, timestep])
    kwargs = {k: v for k, v in call.kwargs.items()}
    kwargs = _cast_floats(kwargs, dtype)
    out = model(**{call.latent_arg: latent_in.to(dtype), "timestep": timestep}, **kwargs, return_dict=False)[0]
    out = out.float()
    if call.cfg:
        uncond, cond = out.chunk(2)
        if detach_uncond:
            uncond = uncond.detach()
        out = uncond + rollout.guidance_scale * (cond - uncond)
    params = {k: v[samples, steps] for k, v in rollout.step_params.items()}
    return step_from_params(rollout.sampler, out, x, params, prev_sample=x_next, **rollout.options)


def reference_step_log_prob(model: torch.nn.Module, rollout: Rollout, samples: torch.Tensor | Sequence[int],
                            steps: torch.Tensor | int | Sequence[int]) -> StepOutput:
    """:func:`step_log_prob` of the reference policy: ``model`` with its LoRA adapters off, without gradients
    (flow_grpo ``scripts/train_sd3.py`` lines 875-878; call it only when the KL term is on)."""
    with torch.no_grad(), adapters_disabled(model) as ref:
        return step_log_prob(ref, rollout, samples, steps)
