"""Where every DDIM-inversion step of a sample starts, where it ends and at which timestep it asks the model.

Two conventions (config key ``method.<smpo|inpo>.noise.convention``; spec ``diffusion_objectives.md`` §3, §4):

**official** (default; the SmPO / InPO configs set it): the semantics of the code the SmPO and InPO authors ran.
Both repositories pin ``diffusers==0.20.0`` (``JaydenLyh/SmPO`` @ 8922d54 and ``JaydenLyh/InPO`` @ a9cfc4d,
``requirements.txt``) and invert with::

    inverse_scheduler = DDIMInverseScheduler.from_pretrained(model, subfolder="scheduler")   # InPO train.py l.471
    inverse_scheduler.set_timesteps(10)          # InPO l.866/875; SmPO l.872 (SDXL) and 5 for SD1.5 (l.881)
    for tau in inverse_scheduler.timesteps[inverse_scheduler.timesteps < t]:                 # InPO l.995-1007
        z = inverse_scheduler.step(unet(z, tau, c).sample, tau, z).prev_sample                # SmPO l.1002-1022

With diffusers 0.20.0 (``huggingface/diffusers`` @ e3380c0 = tag v0.20.0,
``src/diffusers/schedulers/scheduling_ddim_inverse.py``):

* ``set_timesteps(K)`` (l.274-294): "leading" ``g_k = k (T // K) + steps_offset``, k = 0..K-1 ("trailing":
  ``round(arange(T, 0, -T/K)[::-1]) - 1``), rolled by one with the first entry replaced by ``g_1 - T/K``; for
  Stable Diffusion's scheduler config (``steps_offset: 1``) and K = 10: ``[-99, 1, 101, ..., 801]``.
* ``step(eps, tau, z)`` (l.337-374) moves a latent **from level tau to tau + T // K**:
  ``abar_src = alphas_cumprod[tau]`` (``initial_alpha_cumprod`` = 1 if ``set_alpha_to_one`` else
  ``alphas_cumprod[0]`` = 0.99915 for SD when ``tau < 0``), ``abar_dst = alphas_cumprod[tau + T // K]``,
  ``x0_hat = (z - sqrt(1 - abar_src) eps) / sqrt(abar_src)`` (clamped to ``clip_sample_range`` if ``clip_sample``),
  ``z' = sqrt(abar_dst) x0_hat + sqrt(1 - abar_dst) eps``.
* so the model is queried **at the level of its input latent** (the clean latent at timestep ``-99``), a sample
  takes every grid step ``tau < t`` and ends at the next grid level at or above ``t`` (up to ``T/K - 1`` levels
  noisier), capped at the last grid level + ``T // K`` (901 for K = 10, 801 for K = 5: less noisy than a
  ``t`` above it). The training step then uses ``abar_t`` of the sampled ``t`` for the implied noise (InPO
  l.1012-1014), i.e. ``mmalign.diffusion.inversion.ddim.implied_noise`` at ``t``.

Reproduced here with today's diffusers (whose ``DDIMInverseScheduler`` changed both the grid and the query level
in 0.22): the scheduler's own config gives ``num_train_timesteps``, ``steps_offset``, ``timestep_spacing``,
``set_alpha_to_one`` and ``clip_sample(_range)``; a missing key takes the 0.20 ``DDIMInverseScheduler`` default
(l.181-193). Every sample has its own ``t`` (the official code uses ``timesteps[0]`` for the whole batch).

**exact** (mmalign's earlier grid, kept as an option): every sample gets a grid that starts at the clean latent
(``abar = 1``) and ends **exactly** at its ``t``; the model is queried at the *target* level of each step::

    n_i   = max(1, ceil(K t_i / T));   tau_k = round(k t_i / n_i), k = 1..n_i   (tau_{n_i} = t_i)

Measured on the shipped toy base (issue 16): the exact grid's first step evaluates the clean ``x0`` at ``tau_1``
and its implied noise keeps a cosine of +0.3..+0.4 with ``x0``; the official convention's is about 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

CONVENTIONS = ("official", "exact")

OFFICIAL_DEFAULTS: dict[str, Any] = {
    "steps_offset": 0, "timestep_spacing": "leading", "set_alpha_to_one": True, "clip_sample": True,
    "clip_sample_range": 1.0,
}
"""``DDIMInverseScheduler.__init__`` defaults in diffusers 0.20.0 (l.181-193), used where a config lacks the key."""


@dataclass(frozen=True)
class Step:
    """One inversion step: ``query`` is the timestep given to the model, ``src`` / ``dst`` the abar of the input and
    output latents, ``query_abar`` the abar used to turn a v-prediction into a noise estimate."""

    query: int
    src: float
    dst: float
    query_abar: float


@dataclass(frozen=True)
class InversionPlan:
    steps: list[list[Step]]
    """Per sample, its steps in order."""
    clip: float | None = None
    """Clamp ``x0_hat`` to ``[-clip, clip]`` (official convention with ``clip_sample``); None: no clamp."""

    @property
    def iterations(self) -> int:
        return max((len(s) for s in self.steps), default=0)


def inversion_grid(t: torch.Tensor, num_steps: int, num_train_timesteps: int) -> list[list[int]]:
    """``exact`` convention: per-sample integer grids ``[tau_1, ..., tau_n]`` ending exactly at ``t_i``."""
    if num_steps < 1:
        raise ValueError(f"number of inversion steps must be >= 1, got {num_steps}")
    grids = []
    for ti in t.tolist():
        ti = int(ti)
        if not 0 <= ti < num_train_timesteps:
            raise ValueError(f"timestep {ti} outside [0, {num_train_timesteps})")
        n = max(1, math.ceil(num_steps * ti / num_train_timesteps))
        grids.append([round(k * ti / n) for k in range(1, n + 1)])
    return grids


def official_timesteps(num_steps: int, config: Any) -> tuple[list[int], int]:
    """``(timesteps, stride)``: diffusers 0.20 ``DDIMInverseScheduler.set_timesteps(num_steps).timesteps`` for a
    scheduler ``config`` and the level increment of its ``step`` (``T // K``, l.338)."""
    cfg = {k: config.get(k, v) for k, v in OFFICIAL_DEFAULTS.items()}
    total = int(config.get("num_train_timesteps", 1000))
    if not 2 <= num_steps <= total:
        raise ValueError(f"config key 'method.<smpo|inpo>.noise.inversion_steps': the official convention needs 2..{total} "
                         f"steps (diffusers 0.20 set_timesteps fails for {num_steps})")
    if cfg["timestep_spacing"] == "leading":
        ratio: float = total // num_steps
        grid = (np.arange(0, num_steps) * ratio).round().astype(np.int64) + int(cfg["steps_offset"])
    elif cfg["timestep_spacing"] == "trailing":
        ratio = total / num_steps
        grid = np.round(np.arange(total, 0, -ratio)[::-1]).astype(np.int64) - 1
    else:
        raise ValueError(f"official inversion convention: timestep_spacing '{cfg['timestep_spacing']}' is not "
                         "supported by diffusers 0.20's DDIMInverseScheduler (leading, trailing)")
    grid = np.roll(grid, 1)
    grid[0] = int(grid[1] - ratio)
    stride = total // num_steps
    if int(grid.max()) + stride >= total:
        raise ValueError(f"official inversion convention: the grid {grid.tolist()} steps past timestep {total - 1}")
    return [int(v) for v in grid], stride


def _official_plan(t: torch.Tensor, num_steps: int, scheduler: Any) -> InversionPlan:
    config = scheduler.config
    grid, stride = official_timesteps(num_steps, config)
    alphas = scheduler.alphas_cumprod.to("cpu", torch.float64)
    initial = 1.0 if config.get("set_alpha_to_one", OFFICIAL_DEFAULTS["set_alpha_to_one"]) else float(alphas[0])

    def abar(level: int) -> float:
        return float(alphas[level]) if level >= 0 else initial

    steps = []
    for ti in t.tolist():
        if not 0 <= int(ti) < len(alphas):
            raise ValueError(f"timestep {int(ti)} outside [0, {len(alphas)})")
        steps.append([Step(tau, abar(tau), abar(tau + stride), abar(tau)) for tau in grid if tau < int(ti)])
    clip = None
    if config.get("clip_sample", OFFICIAL_DEFAULTS["clip_sample"]):
        clip = float(config.get("clip_sample_range", OFFICIAL_DEFAULTS["clip_sample_range"]))
    return InversionPlan(steps, clip)


def _exact_plan(t: torch.Tensor, num_steps: int, scheduler: Any) -> InversionPlan:
    alphas = scheduler.alphas_cumprod.to("cpu", torch.float64)
    steps = []
    for grid in inversion_grid(t, num_steps, int(scheduler.config.num_train_timesteps)):
        levels = [1.0] + [float(alphas[tau]) for tau in grid]
        steps.append([Step(tau, levels[k], levels[k + 1], levels[k + 1]) for k, tau in enumerate(grid)])
    return InversionPlan(steps)


def inversion_plan(t: torch.Tensor, num_steps: int, scheduler: Any, convention: str = "official") -> InversionPlan:
    """The steps that invert clean latents to their timesteps ``t`` (N,) under ``convention`` (module docstring)."""
    if convention == "official":
        return _official_plan(t.cpu(), num_steps, scheduler)
    if convention == "exact":
        return _exact_plan(t.cpu(), num_steps, scheduler)
    raise ValueError(f"config key 'method.<smpo|inpo>.noise.convention': '{convention}' ({', '.join(CONVENTIONS)})")
