"""Options of a noise provider (``method.smpo.noise`` / ``method.inpo.noise``): light, no torch (the providers are
in :mod:`mmalign.diffusion.noise_providers`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class NoiseConfig:
    provider: str = "forward"
    """forward | ddim | renoise (the defaults of method.smpo.noise: renoise, method.inpo.noise: ddim)."""
    convention: str = "official"
    """official | exact: the inversion grid and the timestep the model is queried at (inversion_plan.py).
    official = diffusers 0.20 DDIMInverseScheduler as the SmPO/InPO code ran it: rolled "leading" grid of K
    points, model queried at the level of its input latent (the clean latent at -T/K + steps_offset), every grid
    step below t, so the latent ends at the next grid level >= t; exact = a grid from the clean latent ending
    exactly at t, model queried at each step's target level."""
    inversion_steps: int = 10
    """K: grid points over the full range [0, T) (official: 10 for SDXL and InPO, 5 for SmPO SD1.5; the official
    convention needs K >= 2). exact: a sample at t gets max(1, ceil(K t / T)) steps ending exactly at t."""
    renoise_iters: int = 1
    """ReNoise re-predictions per inversion step (official SmPO: 1, i.e. the average of 2 predictions)."""
    eta: float = 0.0
    """Stochastic term of DDIM inversion, eta * sqrt(Var_DDIM) * N(0, I) per step (method.inpo.noise: 0.1)."""
    inversion_model: str = "policy"
    """policy (current weights, official) | reference (the reference model)."""
