"""GRPO for diffusion rollouts (Flow-GRPO / DanceGRPO / DDPO) and online-DPO pair selection: pure functions.

Sources (pinned commits; line numbers of those files):

* yifan123/flow_grpo@ac4c86e8cae021841f1fde853d340e0db67690dd — ``flow_grpo/stat_tracking.py``
  ``PerPromptStatTracker.update`` lines 11-31 (per-prompt mean, numpy population std + 1e-4, ``global_std``: std of
  the whole batch); ``scripts/train_sd3.py`` lines 132-166 (``calculate_zero_std_ratio``), 781-782 (no tracking:
  batch mean / std + 1e-4), 796-816 (samples with all-zero advantages dropped), 881-929 (advantage clip, PPO-clip,
  KL on the SDE means, approx_kl, clipfrac); ``scripts/train_sd3_dpo.py`` lines 734-830 with
  ``stat_tracking.py`` lines 38-52 (online DPO: argmax chosen, argmin rejected).
* kvablack/ddpo-pytorch@1958463f020112c9a7bc85768d296daacc2e1b4b — ``ddpo_pytorch/stat_tracking.py`` lines 11-30
  (per-prompt buffer, std + 1e-6), ``scripts/train.py`` lines 539-560 (the same PPO-clip loss and approx_kl).
* XueZeyue/DanceGRPO@15cc71d53cc2e6e18a68ee607d5fb6ba9a99e344 — ``fastvideo/train_grpo_flux.py`` lines 533-547
  (consecutive groups of ``num_generations``, torch's unbiased std + 1e-8) and 587-604 (the same PPO-clip loss).

Formulas:

* advantages (:func:`group_advantages`): ``A_i = (r_i - mean_{g(i)}) / (std + eps)`` with ``std`` the group's
  (``global_std=False``) or the whole batch's (``global_std=True``) standard deviation, population
  (``unbiased=False``: numpy's ``np.std``, flow_grpo / DDPO) or unbiased (DanceGRPO); ``eps`` 1e-4 (flow_grpo),
  1e-6 (DDPO), 1e-8 (DanceGRPO). Groups are the distinct ``prompt_ids``. Computed in float64 as numpy does.
  DDPO's cross-epoch per-prompt buffer (``buffer_size`` / ``min_count``) is not kept: with a fresh buffer and
  ``min_count <= group size`` its result is this one with ``eps=1e-6`` (tested).
* zero-std groups: a group whose rewards are all equal (population std exactly 0, as
  ``calculate_zero_std_ratio``) carries no signal; it is flagged, counted and its samples are ``keep=False``.
  flow_grpo instead drops samples whose advantage is exactly 0 (``mask = advantages.abs().sum(1) != 0``), which
  finds the same groups only when ``r - mean`` rounds to exactly 0 and also drops a lone sample at its group's mean;
  and pads the mask to a multiple of the batch count — neither is reproduced (the evident intent is kept).
* PPO-clip (:func:`ppo_clip_loss`): ``A = clamp(A, -adv_clip_max, adv_clip_max)``,
  ``ratio = exp(log_prob - old_log_prob)``,
  ``loss = mean(max(-A * ratio, -A * clamp(ratio, 1 - clip_range, 1 + clip_range)))``;
  metrics ``approx_kl = 0.5 * mean((log_prob - old_log_prob)^2)``, ``clipfrac = mean(|ratio - 1| > clip_range)``,
  ``clipfrac_gt_one``, ``clipfrac_lt_one``.
* KL to the reference (:func:`sde_mean_kl`): ``mean_b(mean_{C,H,W}((mean - mean_ref)^2) / (2 std_dev_t^2))`` with
  the SDE coefficient ``std_dev_t`` of the policy's step (flow_grpo line 895: not the transition std
  ``std_dev_t * sqrt(-dt)``; for DDIM pass the transition std); :func:`grpo_loss` adds ``beta * kl``.
* online DPO (:func:`online_dpo_pairs`): per prompt the argmax-reward sample is chosen and the argmin rejected,
  ties to the first index (``torch.argmax`` / ``torch.argmin``); a group whose rewards are all equal gets
  flow_grpo's fallback (chosen = its second sample, rejected = its first) and is flagged ``tied``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmalign.objectives.pairwise import Metrics


@dataclass
class GroupAdvantages:
    """Result of :func:`group_advantages` (N samples, G groups)."""

    advantages: torch.Tensor
    """(N,) float32."""
    groups: torch.Tensor
    """(G,) the distinct prompt ids, sorted."""
    group_index: torch.Tensor
    """(N,) long: the group of each sample (index into ``groups``)."""
    mean: torch.Tensor
    """(G,) float32 group mean reward."""
    std: torch.Tensor
    """(G,) float32 the std each group was divided by (before ``eps``; the batch std under ``global_std``)."""
    zero_std: torch.Tensor
    """(G,) bool: all rewards of the group equal."""
    keep: torch.Tensor
    """(N,) bool: the sample's group has a non-zero std (train on these)."""

    @property
    def zero_std_count(self) -> int:
        return int(self.zero_std.sum())

    @property
    def zero_std_fraction(self) -> float:
        """flow_grpo's ``zero_std_ratio``: the fraction of prompts whose rewards are all equal."""
        return float(self.zero_std.float().mean()) if self.zero_std.numel() else 0.0


def _check(rewards: torch.Tensor, prompt_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rewards, prompt_ids = torch.as_tensor(rewards), torch.as_tensor(prompt_ids)
    if rewards.dim() != 1 or prompt_ids.shape != rewards.shape:
        raise ValueError(f"rewards and prompt_ids must both have shape [N], got {tuple(rewards.shape)} and "
                         f"{tuple(prompt_ids.shape)}")
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards contain NaN or inf")
    return rewards, prompt_ids


def group_advantages(rewards: torch.Tensor, prompt_ids: torch.Tensor, *, eps: float = 1e-4,
                     global_std: bool = False, unbiased: bool = False) -> GroupAdvantages:
    """Group-relative advantages (module docstring). ``rewards`` (N,); ``prompt_ids`` (N,) integer group labels
    (e.g. :attr:`mmalign.diffusion.rollouts.rollout.Rollout.prompt_ids`)."""
    rewards, prompt_ids = _check(rewards, prompt_ids)
    r = rewards.detach().double().cpu()
    groups, index = torch.unique(prompt_ids.cpu(), sorted=True, return_inverse=True)
    n_groups = groups.numel()
    count = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, index, torch.ones_like(r))
    mean = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, index, r) / count
    sq = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, index, (r - mean[index]) ** 2)
    population = torch.sqrt(sq / count)
    if unbiased and bool((count < 2).any()):
        raise ValueError("unbiased std needs at least 2 samples per prompt")
    group_std = torch.sqrt(sq / (count - 1)) if unbiased else population
    if global_std:
        group_std = torch.full_like(group_std, float(r.std(unbiased=unbiased)) if r.numel() > 1 else 0.0)
    advantages = (r - mean[index]) / (group_std[index] + eps)
    zero = population == 0
    device = rewards.device
    return GroupAdvantages(
        advantages=advantages.float().to(device), groups=groups.to(device), group_index=index.to(device),
        mean=mean.float().to(device), std=group_std.float().to(device), zero_std=zero.to(device),
        keep=(~zero[index]).to(device),
    )


def clip_advantages(advantages: torch.Tensor, adv_clip_max: float | None) -> torch.Tensor:
    """``clamp(A, -adv_clip_max, adv_clip_max)`` (flow_grpo / DDPO ``train.adv_clip_max``, 5); None: unclipped."""
    return advantages if adv_clip_max is None else advantages.clamp(-adv_clip_max, adv_clip_max)


def ppo_clip_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, *,
                  clip_range: float, adv_clip_max: float | None = None) -> tuple[torch.Tensor, Metrics]:
    """Per-sample PPO-clip losses ``max(-A ratio, -A clip(ratio, 1 -+ clip_range))`` (n,) — the batch loss is their
    mean (flow_grpo ``policy_loss``) — and detached metrics ``approx_kl``, ``clipfrac``, ``clipfrac_gt_one``,
    ``clipfrac_lt_one``, ``ratio_mean``. ``log_prob`` with gradients; ``old_log_prob`` the rollout's."""
    if clip_range <= 0:
        raise ValueError(f"clip_range must be > 0, got {clip_range}")
    if log_prob.shape != old_log_prob.shape or advantages.shape != log_prob.shape:
        raise ValueError(f"log_prob {tuple(log_prob.shape)}, old_log_prob {tuple(old_log_prob.shape)} and "
                         f"advantages {tuple(advantages.shape)} must have the same shape")
    adv = clip_advantages(advantages.to(log_prob.dtype), adv_clip_max)
    delta = log_prob - old_log_prob.detach()
    ratio = torch.exp(delta)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    losses = torch.maximum(unclipped, clipped)
    with torch.no_grad():
        metrics = {
            "approx_kl": 0.5 * torch.mean(delta.detach() ** 2),
            "clipfrac": torch.mean((torch.abs(ratio - 1.0) > clip_range).float()),
            "clipfrac_gt_one": torch.mean((ratio - 1.0 > clip_range).float()),
            "clipfrac_lt_one": torch.mean((1.0 - ratio > clip_range).float()),
            "ratio_mean": ratio.detach().mean(),
        }
    return losses, metrics


def sde_mean_kl(mean: torch.Tensor, mean_ref: torch.Tensor, std_dev_t: torch.Tensor) -> torch.Tensor:
    """Per-sample KL of two Gaussian steps with the same std: ``mean_{non-batch}((mean - mean_ref)^2) /
    (2 std_dev_t^2)`` (n,) float32; the batch KL is its mean (flow_grpo ``kl_loss``)."""
    if mean.shape != mean_ref.shape:
        raise ValueError(f"mean {tuple(mean.shape)} and mean_ref {tuple(mean_ref.shape)} differ in shape")
    sq = ((mean.float() - mean_ref.detach().float()) ** 2).mean(dim=tuple(range(1, mean.dim())))
    return sq / (2 * std_dev_t.float().reshape(-1) ** 2)


def grpo_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, *, clip_range: float,
              adv_clip_max: float | None = None, beta: float = 0.0, mean: torch.Tensor | None = None,
              mean_ref: torch.Tensor | None = None, std_dev_t: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, Metrics]:
    """flow_grpo's per-step GRPO loss: ``mean(ppo_clip) + beta * mean(sde_mean_kl)`` (a scalar) and metrics
    (:func:`ppo_clip_loss`'s plus ``policy_loss``, ``kl_loss`` when ``beta > 0``, ``loss``). ``mean`` /
    ``mean_ref`` / ``std_dev_t``: the policy's and the reference's step means and the policy's SDE coefficient
    (:class:`mmalign.diffusion.rollouts.sde_steps.StepOutput`), needed only when ``beta > 0``."""
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    losses, metrics = ppo_clip_loss(log_prob, old_log_prob, advantages, clip_range=clip_range,
                                    adv_clip_max=adv_clip_max)
    policy = losses.mean()
    loss = policy
    if beta > 0:
        if mean is None or mean_ref is None or std_dev_t is None:
            raise ValueError("beta > 0 needs mean, mean_ref and std_dev_t (the reference forward)")
        kl = sde_mean_kl(mean, mean_ref, std_dev_t).mean()
        loss = policy + beta * kl
        metrics["kl_loss"] = kl.detach()
    metrics["policy_loss"] = policy.detach()
    metrics["loss"] = loss.detach()
    return loss, metrics


@dataclass
class DPOPairs:
    """Online-DPO pairs, one per prompt (sorted prompt ids): sample indices into the batch."""

    groups: torch.Tensor
    """(G,) prompt ids."""
    chosen: torch.Tensor
    """(G,) long: index of the highest-reward sample of each prompt."""
    rejected: torch.Tensor
    """(G,) long: index of the lowest-reward sample."""
    tied: torch.Tensor
    """(G,) bool: all rewards equal (no preference; flow_grpo's fallback pair)."""


def online_dpo_pairs(rewards: torch.Tensor, prompt_ids: torch.Tensor) -> DPOPairs:
    """Best-vs-worst pairs per prompt (module docstring); every prompt needs at least 2 samples."""
    rewards, prompt_ids = _check(rewards, prompt_ids)
    groups = torch.unique(prompt_ids, sorted=True)
    chosen, rejected, tied = [], [], []
    for g in groups:
        members = (prompt_ids == g).nonzero().reshape(-1)
        if members.numel() < 2:
            raise ValueError(f"online DPO: prompt {int(g)} has {members.numel()} sample(s); need >= 2")
        values = rewards[members]
        hi, lo = int(torch.argmax(values)), int(torch.argmin(values))
        same = hi == lo
        if same:  # flow_grpo stat_tracking.py lines 45-47
            hi, lo = 1, 0
        chosen.append(members[hi])
        rejected.append(members[lo])
        tied.append(same)
    device = rewards.device
    return DPOPairs(groups=groups, chosen=torch.stack(chosen).to(device), rejected=torch.stack(rejected).to(device),
                    tied=torch.tensor(tied, dtype=torch.bool, device=device))
