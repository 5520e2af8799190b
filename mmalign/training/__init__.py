"""The one accelerate training loop shared by every recipe, one job per file.

* :mod:`.loop` — :func:`~mmalign.training.loop.train`: micro-batches, accumulation, the optimizer step with its
  NaN/inf guard, checkpoints at their steps, Ctrl-C, validation, the summary (read it top to bottom);
* :mod:`.run` — the prepared pieces of one ``train`` call (seed, run lock, optimizer, LR schedule, data order,
  ``accelerator.prepare``);
* :mod:`.sampler` — :class:`~mmalign.training.sampler.EpochSampler`, the data order as a function of
  ``(seed, epoch)``;
* :mod:`.optimizer` — :func:`~mmalign.training.optimizer.build_optimizer` (``train.optimizer``);
* :mod:`.distributed` — the Accelerator every recipe uses, the launch checks (world size, sharding without GPUs)
  and :func:`~mmalign.training.distributed.finish_distributed`;
* :mod:`.checkpointing` — accelerate's save/load hooks, writing a checkpoint, ``train.resume``;
* :mod:`.metrics` — the step's metrics without host syncs, their mean over processes, ``summary.json``;
* :mod:`.keep_weights` — the trained weights survive a Ctrl-C after the loop and a full disk at any write.

The light schema of the ``train:`` block is :mod:`mmalign.train_config` (config schemas import it, never torch).
"""
