"""One module per diffusion method step (``step(ctx, policy, batch) -> (loss, metrics)``), named by
:mod:`mmalign.diffusion.registry`; the shared parts are in :mod:`mmalign.diffusion.step_context`."""
