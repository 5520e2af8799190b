"""DDIM / ReNoise inversion of clean latents to a per-sample timestep, the x_t that SmPO and InPO train on
(:mod:`mmalign.diffusion.noise_providers` feeds it to their steps).

* :mod:`.ddim` — ``invert`` (DDIM inversion, ReNoise), ``implied_noise``, ``ddim_denoise``;
* :mod:`.plan` — where each inversion step starts, ends and queries the model (the ``official`` / ``exact``
  conventions, ``method.<smpo|inpo>.noise.convention``).
"""
