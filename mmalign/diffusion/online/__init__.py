"""Online alignment on the one loop: GRPO (Flow-GRPO / DanceGRPO / DDPO) and online Diffusion-DPO.

An online method is a registry entry (:mod:`mmalign.diffusion.registry`: data kind ``prompts``) whose
``training_set`` hook (:func:`mmalign.diffusion.online.setup.online_training_set`) returns, instead of a data set of
images, the epoch's *slots* (:class:`~mmalign.diffusion.online.engine.EpochSlots`): units of optimisation work on
rollouts that do not exist yet. The shared loop (:func:`mmalign.training.loop.train`) runs unchanged:

1. **rollout phase** — the first micro-batch of loop epoch ``e`` finds no rollouts for ``e`` and makes them
   (:class:`~mmalign.diffusion.online.engine.OnlineEngine`): ``prompts_per_epoch`` prompts (a permutation of the
   train prompts per ``(seed, e)``), ``group_size`` images each from the current policy with CFG, noise from
   generators seeded by ``(seed, e)`` (never the global RNG), decoded and scored in batches by the reward
   (``reward:`` block, ``scorers.reward``), each term logged;
2. **optimisation phase** — the epoch's micro-batches are slots of those rollouts: GRPO ``(inner epoch, sample,
   trained transition)`` (:mod:`.grpo_step`), online DPO ``(pair, repeat)`` (:mod:`.dpo_step`, the existing
   Diffusion-DPO step on best vs worst).

The epoch's rollouts are part of every checkpoint (``accelerator.register_for_checkpointing``), so
``train.resume=latest`` in the middle of an epoch continues on the same rollouts and reproduces the uninterrupted
run; Ctrl-C, the run lock and the checkpoint layout are the loop's own.
"""
