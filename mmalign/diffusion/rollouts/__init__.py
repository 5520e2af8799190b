"""Rollouts: images sampled on the one sampling path with the log-probability of every stochastic step, and the
training-time recomputation of those log-probs (what the online methods in :mod:`mmalign.diffusion.online` and
the GRPO objective build on).

* :mod:`.rollout` — the API: ``rollout(pipe, embeds, ...)``, ``step_log_prob``, ``reference_step_log_prob``;
* :mod:`.record` — the record a rollout returns (:class:`~mmalign.diffusion.rollouts.record.Rollout`,
  :class:`~mmalign.diffusion.rollouts.record.DenoiserCall`), with ``select`` / ``cat``;
* :mod:`.schedulers` — the diffusers schedulers swapped into the pipeline that take and record the stochastic step;
* :mod:`.sde_steps` — the stochastic sampler steps and their Gaussian log-probs (pure tensor math; sources cited).
"""
