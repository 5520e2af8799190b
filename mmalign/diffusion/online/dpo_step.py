"""Online Diffusion-DPO: best vs worst of each prompt's rollouts, trained with the existing Diffusion-DPO step.

Source: yifan123/flow_grpo@ac4c86e8cae021841f1fde853d340e0db67690dd ``scripts/train_sd3_dpo.py`` (and D3PO's online rounds). Per epoch:

* ``collect`` — ``group_size`` images per prompt from the **current policy** on the one sampling path
  (:func:`mmalign.diffusion.sampling.generate`, the pipeline's own scheduler: the ODE sampler, or DDIM with
  ``eta`` on DDPM UNets), scored by the reward; per prompt the argmax-reward image is chosen and the argmin
  rejected (ties: the first index, ``torch.argmax`` / ``argmin``, as the official ``max`` / ``min``); a group whose
  rewards are all equal carries no preference and is dropped (counted: ``zero_std_fraction``). Stored: **each
  image's own final latent**. The official script stacks the per-step latents as (batch, T+1, ...) and stores
  ``latents[-1]`` — the last image's whole trajectory, not every image's final latent (its evident intent); this
  implements the intent.
* ``online_dpo_step`` — slot = (pair, repeat): ``timesteps_per_pair`` passes per pair, each at a fresh training
  timestep and noise, through :func:`mmalign.diffusion.steps.dpo.dpo_step` (the family's own score: eps / v /
  flow-matching velocity; ``method.beta`` in the official -(beta/2) form, ``method.online_dpo.loss_type``).
* the reference: the base model (LoRA adapters off / the frozen copy), or, with ``ref_update_step = N > 0``, a
  snapshot of the learner's trainable weights taken every N optimizer steps (flow_grpo copies the learner adapter
  into its ``ref`` adapter every ``ref_update_step`` steps); the snapshot is checkpointed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from mmalign.diffusion.adapter import constant_time_ids
from mmalign.diffusion.online.engine import OnlineEngine, Rollouts, sampler_kwargs
from mmalign.diffusion.online.stats import reward_stats
from mmalign.diffusion.sampling import denoiser, generate
from mmalign.diffusion.step_context import Metrics, StepContext
from mmalign.diffusion.steps.dpo import dpo_step
from mmalign.unwrap import unwrap


def best_worst(total: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(chosen, rejected, keep)`` flat indices per group of ``group_size`` consecutive rewards
    (:func:`mmalign.objectives.grpo.online_dpo_pairs`: argmax / argmin, first index on ties) and whether the
    group's rewards differ at all."""
    from mmalign.objectives.grpo import online_dpo_pairs

    pairs = online_dpo_pairs(total, torch.arange(len(total) // group_size).repeat_interleave(group_size))
    return pairs.chosen, pairs.rejected, ~pairs.tied


def sample_final_latents(engine: OnlineEngine, prompts: list[str], epoch: int) -> torch.Tensor:
    """``group_size`` final latents per prompt (prompt-major), in batches of ``rollout_batch_size`` images."""
    o, pipe = engine.options, engine.parts.pipeline
    pipe.set_progress_bar_config(disable=True)
    texts = [p for p in prompts for _ in range(o.group_size)]
    out, bar = [], engine.progress(len(texts), f"rollout (epoch {epoch})")
    kwargs = sampler_kwargs(engine, o.num_steps)
    for start in range(0, len(texts), o.rollout_batch_size):
        index = range(start, min(start + o.rollout_batch_size, len(texts)))
        generators = [engine.generator(epoch, i // o.group_size if o.same_noise else i) for i in index]
        out.append(generate(pipe, [texts[i] for i in index], output_type="latent", generator=generators,
                            autocast=engine.autocast, **kwargs).float().cpu())
        bar.update(len(index))
    bar.close()
    return torch.cat(out)


def collect(engine: OnlineEngine, policy, prompts: list[str], epoch: int) -> Rollouts:
    """The epoch's pairs (module docstring)."""
    if unwrap(policy) is not denoiser(engine.parts.pipeline):
        raise RuntimeError("online DPO samples from the pipeline's own denoiser, which must be the policy")
    mine = engine.process_share(prompts)
    latents = sample_final_latents(engine, mine, epoch)
    texts = [p for p in mine for _ in range(engine.options.group_size)]
    total, terms = engine.score(latents, texts)
    everything = engine.gather({"total": total, **{f"term/{k}": v for k, v in terms.items()}})
    chosen, rejected, keep = best_worst(total, engine.options.group_size)
    stats = reward_stats(everything["total"], {k[5:]: v for k, v in everything.items() if k.startswith("term/")},
                         engine.options.group_size)
    if not keep.any():  # every group tied: nothing to learn from this epoch; keep one pair so the slots stay defined
        keep[0] = True
    kept = [p for p, k in zip(mine, keep.tolist()) if k]
    tensors = {"chosen": latents[chosen[keep]], "rejected": latents[rejected[keep]],
               "margin": (total[chosen] - total[rejected])[keep]}
    stats.update(pairs=float(len(kept)), pair_margin=float(tensors["margin"].mean()))
    return Rollouts(epoch, tensors, kept, stats)


class SnapshotReference:
    """A reference that is a snapshot of the learner's trainable weights (``ref_update_step``): the reference
    forward swaps the snapshot in (eval mode, no gradients) and the learner's weights back afterwards."""

    mode = "snapshot"

    def __init__(self, weights: dict[str, torch.Tensor]) -> None:
        self.weights = weights

    @staticmethod
    def take(policy) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone().cpu() for n, p in unwrap(policy).named_parameters() if p.requires_grad}

    @contextmanager
    def model(self, policy) -> Iterator[Any]:
        model = unwrap(policy)
        params = dict(model.named_parameters())
        saved = {n: params[n].data for n in self.weights}
        was_training = model.training
        model.eval()
        try:
            for n, w in self.weights.items():
                params[n].data = w.to(saved[n].device, saved[n].dtype)
            yield model
        finally:
            for n, data in saved.items():
                params[n].data = data
            model.train(was_training)


class RolloutInputs:
    """``ctx.inputs`` for rollout pairs: x0 = the final latents (already in the denoiser's latent space), the
    prompts' conditioning from the engine, SDXL's constant time ids (what the pipeline sampled with)."""

    def __init__(self, engine: OnlineEngine) -> None:
        self.engine = engine

    def __call__(self, batch: dict[str, Any], device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x0 = torch.cat([batch["chosen"], batch["rejected"]]).to(device).contiguous()
        cond = {k: torch.cat([v, v]).to(device) for k, v in self.engine.condition(batch["prompts"]).items()}
        if self.engine.parts.family == "sdxl":
            cond["time_ids"] = constant_time_ids(x0.shape[0], self.engine.cfg.data.resolution, device)
        return x0, cond


def _reference(engine: OnlineEngine, ctx: StepContext, policy):
    """The step's reference (module docstring); refreshes the snapshot at the first micro-batch of every
    ``ref_update_step``-th optimizer step."""
    every = engine.options.ref_update_step
    state = engine.extra_state
    micro = state.get("micro_batches", 0)
    state["micro_batches"] = micro + 1
    if not every:
        return ctx.reference
    accum = engine.cfg.train.grad_accum
    if micro % accum == 0 and (micro // accum) % every == 0:
        state["reference"] = SnapshotReference.take(policy)
    return SnapshotReference(state["reference"])


def online_dpo_step(ctx: StepContext, policy, batch: dict[str, Any]) -> tuple[torch.Tensor, Metrics]:
    """One micro-batch of pairs of the epoch's rollouts (made on the epoch's first micro-batch)."""
    engine: OnlineEngine = batch["online"]
    rollouts = engine.ensure(batch["epoch"], policy)
    pairs = batch["slots"].cpu() % len(rollouts.prompts)
    chosen, rejected = rollouts.tensors["chosen"], rollouts.tensors["rejected"]
    pair_batch = {"chosen": chosen[pairs.to(chosen.device)], "rejected": rejected[pairs.to(rejected.device)],
                  "prompts": [rollouts.prompts[i] for i in pairs.tolist()], "groups": len(pairs), "group_size": 2}
    step_ctx = dataclasses.replace(ctx, inputs=RolloutInputs(engine), reference=_reference(engine, ctx, policy))
    loss, metrics = dpo_step(step_ctx, policy, pair_batch)
    return loss, {**metrics, **engine.epoch_metrics()}
