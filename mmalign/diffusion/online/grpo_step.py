"""GRPO on the one loop: Flow-GRPO (SD3 / FLUX), DanceGRPO's SDE, DDPO-style DDIM with eta (SD1.x / SDXL).

Sources: yifan123/flow_grpo@ac4c86e8cae021841f1fde853d340e0db67690dd ``scripts/train_sd3.py`` (sampling, advantages, the train loop) and
kvablack/ddpo-pytorch ``scripts/train.py``; the formulas are in :mod:`mmalign.objectives.grpo` (pure) and the
sampler steps in :mod:`mmalign.diffusion.rollouts.sde_steps`. Per epoch:

* ``collect`` — ``group_size`` trajectories per prompt from the current policy with per-step log-probs on the one
  sampling path (:func:`mmalign.diffusion.rollouts.rollout.rollout`: CFG with the empty prompt as the negative, prompt
  embeddings encoded once per prompt, ``num_steps`` training-rollout steps, the SDE window of Flow-GRPO-Fast when
  ``sde_window_size`` > 0), decoded and scored in batches by the reward; group-relative advantages per prompt
  (``global_std``: the std over the whole epoch, flow_grpo's ``sample.global_std``); samples of groups whose
  rewards are all equal have zero advantage everywhere and are dropped (counted: ``zero_std_fraction``).
* ``grpo_step`` — slot = (inner epoch, sample, trained transition) in the loop's shuffled order (DDPO shuffles the
  time axis per sample; flow_grpo visits the steps in order; the applied gradient is the mean over the
  accumulated (micro-batch, transition) terms either way): the transition's log-prob recomputed under the policy
  (:func:`mmalign.diffusion.rollouts.rollout.step_log_prob`; flow families detach the CFG unconditional branch as
  flow_grpo, UNets keep it as DDPO), the PPO-clip loss on the ratio to the rollout's log-prob, and, when
  ``kl_beta`` > 0, the KL of the SDE means to the reference (LoRA: adapters off; full fine-tuning: the frozen copy)
  — the reference forward runs only then.

Logged per step: ``policy_loss``, ``kl_loss``, ``approx_kl`` (1/2 mean (delta log p)^2), ``clipfrac`` (and above / below one), ``ratio_mean``, and
the epoch's reward statistics (``reward/*``, ``zero_std_fraction``, ``kept_fraction``).
"""

from __future__ import annotations

from typing import Any

import torch

from mmalign.diffusion.online.engine import OnlineEngine, Rollouts
from mmalign.diffusion.online.stats import reward_stats
from mmalign.diffusion.step_context import Metrics, StepContext
from mmalign.objectives import grpo as objective


def sampler_name(engine: OnlineEngine) -> str:
    sde = engine.options.sde
    if sde == "auto":
        return "flow_grpo" if engine.parts.is_flow else "ddim"
    return sde


def _noise_level(engine: OnlineEngine, sampler: str) -> float:
    return engine.options.noise_level if sampler == "flow_grpo" else engine.options.eta


def _window(options) -> tuple[int | None, tuple[int, int] | None]:
    if not options.sde_window_size:
        return None, None
    if options.sde_window_range:
        return options.sde_window_size, (int(options.sde_window_range[0]), int(options.sde_window_range[1]))
    high = options.num_steps // 2
    return options.sde_window_size, (0, high if high >= options.sde_window_size else options.num_steps)


def sample_rollouts(engine: OnlineEngine, prompts: list[str], epoch: int):
    """``group_size`` trajectories per prompt (prompt-major), ``rollout_batch_size`` images per pipeline call."""
    from mmalign.diffusion.rollouts.rollout import Rollout, rollout

    o, pipe = engine.options, engine.parts.pipeline
    pipe.set_progress_bar_config(disable=True)
    sampler = sampler_name(engine)
    window, window_range = _window(o)
    per_call = max(1, o.rollout_batch_size // o.group_size)
    negative = engine.condition([""])
    parts, bar = [], engine.progress(len(prompts) * o.group_size, f"rollout (epoch {epoch})")
    extra: dict[str, Any] = {}
    if engine.parts.is_flow:
        extra["max_sequence_length"] = engine.parts.max_sequence_length
    for call, start in enumerate(range(0, len(prompts), per_call)):
        chunk = prompts[start:start + per_call]
        parts.append(rollout(
            pipe, engine.condition(chunk), group_size=o.group_size, num_inference_steps=o.num_steps,
            guidance_scale=o.guidance_scale, negative=None if engine.parts.family == "flux" else negative,
            sampler=sampler, noise_level=_noise_level(engine, sampler), timestep_fraction=o.timestep_fraction,
            sde_window=window, sde_window_range=window_range, same_noise_per_group=o.same_noise,
            generator=engine.generator(epoch, call), height=engine.cfg.data.resolution,
            width=engine.cfg.data.resolution, decode=True, autocast=engine.autocast, **extra))
        bar.update(len(chunk) * o.group_size)
    bar.close()
    return Rollout.cat(parts)


def collect(engine: OnlineEngine, policy, prompts: list[str], epoch: int) -> Rollouts:
    """The epoch's trajectories, rewards and advantages (module docstring)."""
    o = engine.options
    mine = engine.process_share(prompts)
    data = sample_rollouts(engine, mine, epoch)
    texts = [p for p in mine for _ in range(o.group_size)]
    total, terms = engine.score_images(data.images, texts)
    data.images = None  # the rewards are all the step needs; keep checkpoints small
    everything = engine.gather({"total": total, **{f"term/{k}": v for k, v in terms.items()}})
    prompt_ids = data.prompt_ids.cpu() if o.per_prompt_stats else torch.zeros(len(texts), dtype=torch.long)
    adv = objective.group_advantages(total, prompt_ids, global_std=o.global_std)
    stats = reward_stats(everything["total"], {k[5:]: v for k, v in everything.items() if k.startswith("term/")},
                         o.group_size)
    keep = adv.keep.cpu().clone()
    stats["kept_fraction"] = float(keep.float().mean())
    if not keep.any():  # every group tied: nothing to learn; keep one group so the slots stay defined
        keep[: o.group_size] = True
    index = keep.nonzero().reshape(-1)
    advantages = adv.advantages.cpu()
    return Rollouts(epoch, {"rollout": data.select(index), "advantages": advantages[index].float()},
                    [texts[i] for i in index], stats)


def grpo_step(ctx: StepContext, policy, batch: dict[str, Any]) -> tuple[torch.Tensor, Metrics]:
    """One micro-batch of (sample, transition) slots of the epoch's rollouts (module docstring)."""
    engine: OnlineEngine = batch["online"]
    o = engine.options
    rollouts = engine.ensure(batch["epoch"], policy)
    from mmalign.diffusion.rollouts.rollout import step_log_prob

    data, advantages = rollouts.tensors["rollout"], rollouts.tensors["advantages"]
    k = data.train_steps.shape[1]
    flat = batch["slots"] % (data.batch_size * k)
    samples, column = flat // k, flat % k
    device = data.latents.device
    samples, column = samples.to(device), column.to(device)
    steps = data.train_steps[samples, column]
    with ctx.autocast():
        out = step_log_prob(policy, data, samples, steps, detach_uncond=engine.parts.is_flow)
    old = data.log_probs[samples, steps]
    ref_mean = None
    if o.kl_beta > 0:  # the reference forward only where the KL term is on
        with torch.no_grad(), ctx.reference.model(policy) as ref, ctx.autocast():
            ref_mean = step_log_prob(ref, data, samples, steps).mean
    loss, metrics = objective.grpo_loss(out.log_prob, old, advantages.to(device)[samples], clip_range=o.clip_range,
                                        adv_clip_max=o.adv_clip_max, beta=o.kl_beta, mean=out.mean,
                                        mean_ref=ref_mean, std_dev_t=out.std_dev_t)
    metrics.pop("loss", None)  # the loop logs the loss itself
    return loss, {**metrics, **engine.epoch_metrics()}
