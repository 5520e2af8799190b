"""GRPO advantages / PPO-clip / KL and online-DPO pairs equal transcriptions of the official code (issue 24).

Transcriptions (written for this test from the pinned sources):

* ``_FlowGrpoTracker`` — yifan123/flow_grpo@ac4c86e8cae021841f1fde853d340e0db67690dd ``flow_grpo/stat_tracking.py``
  lines 5-55 (``PerPromptStatTracker``, types ``grpo`` and ``dpo``); ``_flow_grpo_zero_std_ratio`` —
  ``scripts/train_sd3.py`` lines 132-166; ``_flow_grpo_loss`` — ``scripts/train_sd3.py`` lines 881-929;
  ``_flow_grpo_dpo_pairs`` — ``scripts/train_sd3_dpo.py`` lines 764-833 (filter non-zero advantages, group by
  prompt, swap so that position 0 is the +1 sample);
* ``_DdpoTracker`` — kvablack/ddpo-pytorch@1958463f020112c9a7bc85768d296daacc2e1b4b ``ddpo_pytorch/stat_tracking.py``
  lines 5-30; ``_ddpo_loss`` — ``scripts/train.py`` lines 539-560;
* ``_dance_advantages`` — XueZeyue/DanceGRPO@15cc71d53cc2e6e18a68ee607d5fb6ba9a99e344 ``fastvideo/train_grpo_flux.py``
  lines 533-545.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch

from mmalign.objectives.grpo import (
    clip_advantages,
    group_advantages,
    grpo_loss,
    online_dpo_pairs,
    ppo_clip_loss,
    sde_mean_kl,
)


class _FlowGrpoTracker:
    def __init__(self, global_std=False):
        self.global_std = global_std
        self.stats = {}

    def update(self, prompts, rewards, type="grpo"):
        prompts = np.array(prompts)
        rewards = np.array(rewards, dtype=np.float64)
        unique = np.unique(prompts)
        advantages = np.empty_like(rewards) * 0.0
        for prompt in unique:
            prompt_rewards = rewards[prompts == prompt]
            if prompt not in self.stats:
                self.stats[prompt] = []
            self.stats[prompt].extend(prompt_rewards)
        for prompt in unique:
            self.stats[prompt] = np.stack(self.stats[prompt])
            prompt_rewards = rewards[prompts == prompt]
            mean = np.mean(self.stats[prompt], axis=0, keepdims=True)
            if self.global_std:
                std = np.std(rewards, axis=0, keepdims=True) + 1e-4
            else:
                std = np.std(self.stats[prompt], axis=0, keepdims=True) + 1e-4
            if type == "grpo":
                advantages[prompts == prompt] = (prompt_rewards - mean) / std
            elif type == "dpo":
                prompt_advantages = torch.tensor(prompt_rewards)
                max_idx = torch.argmax(prompt_advantages)
                min_idx = torch.argmin(prompt_advantages)
                if max_idx == min_idx:
                    min_idx = 0
                    max_idx = 1
                result = torch.zeros_like(prompt_advantages).float()
                result[max_idx] = 1.0
                result[min_idx] = -1.0
                advantages[prompts == prompt] = result.numpy()
        return advantages


def _flow_grpo_zero_std_ratio(prompts, rewards):
    prompt_array = np.array(prompts)
    unique_prompts, inverse_indices, counts = np.unique(prompt_array, return_inverse=True, return_counts=True)
    grouped_rewards = rewards[np.argsort(inverse_indices)]
    split_indices = np.cumsum(counts)[:-1]
    reward_groups = np.split(grouped_rewards, split_indices)
    prompt_std_devs = np.array([np.std(group) for group in reward_groups])
    return np.count_nonzero(prompt_std_devs == 0) / len(prompt_std_devs)


class _DdpoTracker:
    def __init__(self, buffer_size, min_count):
        self.buffer_size, self.min_count, self.stats = buffer_size, min_count, {}

    def update(self, prompts, rewards):
        prompts, rewards = np.array(prompts), np.array(rewards)
        unique = np.unique(prompts)
        advantages = np.empty_like(rewards)
        for prompt in unique:
            prompt_rewards = rewards[prompts == prompt]
            if prompt not in self.stats:
                self.stats[prompt] = deque(maxlen=self.buffer_size)
            self.stats[prompt].extend(prompt_rewards)
            if len(self.stats[prompt]) < self.min_count:
                mean, std = np.mean(rewards), np.std(rewards) + 1e-6
            else:
                mean, std = np.mean(self.stats[prompt]), np.std(self.stats[prompt]) + 1e-6
            advantages[prompts == prompt] = (prompt_rewards - mean) / std
        return advantages


def _dance_advantages(rewards, num_generations):
    n = len(rewards) // num_generations
    advantages = torch.zeros_like(rewards)
    for i in range(n):
        start_idx, end_idx = i * num_generations, (i + 1) * num_generations
        group_rewards = rewards[start_idx:end_idx]
        group_mean = group_rewards.mean()
        group_std = group_rewards.std() + 1e-8
        advantages[start_idx:end_idx] = (group_rewards - group_mean) / group_std
    return advantages


def _flow_grpo_loss(log_prob, old_log_prob, advantages, adv_clip_max, clip_range, beta, mean=None, mean_ref=None,
                    std_dev_t=None):
    advantages = torch.clamp(advantages, -adv_clip_max, adv_clip_max)
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped_loss = -advantages * ratio
    clipped_loss = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    policy_loss = torch.mean(torch.maximum(unclipped_loss, clipped_loss))
    info = {}
    if beta > 0:
        kl_loss = ((mean - mean_ref) ** 2).mean(dim=(1, 2, 3), keepdim=True) / (2 * std_dev_t**2)
        kl_loss = torch.mean(kl_loss)
        loss = policy_loss + beta * kl_loss
        info["kl_loss"] = kl_loss
    else:
        loss = policy_loss
    info["approx_kl"] = 0.5 * torch.mean((log_prob - old_log_prob) ** 2)
    info["clipfrac"] = torch.mean((torch.abs(ratio - 1.0) > clip_range).float())
    info["clipfrac_gt_one"] = torch.mean((ratio - 1.0 > clip_range).float())
    info["clipfrac_lt_one"] = torch.mean((1.0 - ratio > clip_range).float())
    info["policy_loss"], info["loss"] = policy_loss, loss
    return loss, info


def _ddpo_loss(log_prob, old_log_prob, advantages, adv_clip_max, clip_range):
    advantages = torch.clamp(advantages, -adv_clip_max, adv_clip_max)
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped_loss = -advantages * ratio
    clipped_loss = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = torch.mean(torch.maximum(unclipped_loss, clipped_loss))
    return loss, 0.5 * torch.mean((log_prob - old_log_prob) ** 2), torch.mean(
        (torch.abs(ratio - 1.0) > clip_range).float())


def _batch(seed=0, prompts=4, group=6):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.rand(prompts * group, generator=g, dtype=torch.float64)
    ids = torch.arange(prompts).repeat_interleave(group)
    perm = torch.randperm(len(ids), generator=g)  # prompts need not be consecutive
    return rewards[perm], ids[perm]


@pytest.mark.parametrize("global_std", [False, True])
def test_advantages_equal_flow_grpo_tracker(global_std):
    rewards, ids = _batch()
    rewards[ids == 2] = 0.3  # one zero-std group
    names = [f"prompt {int(i)}" for i in ids]
    expected = _FlowGrpoTracker(global_std).update(names, rewards.numpy())
    out = group_advantages(rewards, ids, eps=1e-4, global_std=global_std)
    assert np.allclose(out.advantages.numpy(), expected, atol=1e-6, rtol=1e-6)
    assert out.zero_std.tolist() == [False, False, True, False] and out.zero_std_count == 1
    assert out.zero_std_fraction == _flow_grpo_zero_std_ratio(names, rewards.numpy()) == 0.25
    assert out.keep.tolist() == (ids != 2).tolist()


def test_no_tracking_is_one_group_and_ddpo_and_dancegrpo_variants():
    rewards, ids = _batch(1)
    whole = (rewards.numpy() - rewards.numpy().mean()) / (rewards.numpy().std() + 1e-4)  # train_sd3.py line 782
    assert np.allclose(group_advantages(rewards, torch.zeros_like(ids)).advantages.numpy(), whole, atol=1e-6)
    names = [str(int(i)) for i in ids]
    ddpo = _DdpoTracker(buffer_size=16, min_count=6).update(names, rewards.numpy())
    assert np.allclose(group_advantages(rewards, ids, eps=1e-6).advantages.numpy(), ddpo, atol=1e-6)
    consecutive = torch.rand(24, generator=torch.Generator().manual_seed(2))
    dance = _dance_advantages(consecutive, 6)
    ours = group_advantages(consecutive, torch.arange(4).repeat_interleave(6), eps=1e-8, unbiased=True)
    assert torch.allclose(ours.advantages, dance, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_loss_equals_flow_grpo(beta):
    g = torch.Generator().manual_seed(3)
    n = 8
    old = torch.randn(n, generator=g) - 1.0
    new = (old + 2e-4 * torch.randn(n, generator=g)).requires_grad_()  # some ratios outside 1 +- 1e-4
    adv = 3 * torch.randn(n, generator=g)
    mean, mean_ref = torch.randn(n, 4, 8, 8, generator=g).requires_grad_(), torch.randn(n, 4, 8, 8, generator=g)
    std = torch.rand(n, 1, 1, 1, generator=g) + 0.1
    loss, metrics = grpo_loss(new, old, adv, clip_range=1e-4, adv_clip_max=5.0, beta=beta, mean=mean,
                              mean_ref=mean_ref, std_dev_t=std)
    ref_loss, info = _flow_grpo_loss(new, old, adv, 5.0, 1e-4, beta, mean, mean_ref, std)
    assert torch.allclose(loss, ref_loss, atol=1e-7, rtol=1e-6)
    for key, value in info.items():
        assert torch.allclose(metrics[key], value.detach(), atol=1e-7, rtol=1e-6), key
    assert 0 < float(metrics["clipfrac"]) < 1
    grads = torch.autograd.grad(loss, [new, mean] if beta else [new], allow_unused=True)
    ref_grads = torch.autograd.grad(ref_loss, [new, mean] if beta else [new], allow_unused=True)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, atol=1e-7, rtol=1e-6)


def test_ppo_clip_equals_ddpo_and_checks():
    g = torch.Generator().manual_seed(4)
    old = torch.randn(16, generator=g)
    new = old + 0.5 * torch.randn(16, generator=g)
    adv = 10 * torch.randn(16, generator=g)  # beyond adv_clip_max
    losses, metrics = ppo_clip_loss(new, old, adv, clip_range=0.2, adv_clip_max=5.0)
    loss, approx_kl, clipfrac = _ddpo_loss(new, old, adv, 5.0, 0.2)
    assert torch.allclose(losses.mean(), loss) and torch.allclose(metrics["approx_kl"], approx_kl)
    assert torch.allclose(metrics["clipfrac"], clipfrac)
    assert torch.equal(clip_advantages(adv, 5.0), adv.clamp(-5, 5)) and clip_advantages(adv, None) is adv
    with pytest.raises(ValueError, match="clip_range"):
        ppo_clip_loss(new, old, adv, clip_range=0.0)
    with pytest.raises(ValueError, match="beta > 0 needs"):
        grpo_loss(new, old, adv, clip_range=0.2, beta=0.1)
    # ratio 1 (first inner step): the loss is -mean(A), its gradient -A / n per log-prob
    first = old.clone().requires_grad_()
    losses, metrics = ppo_clip_loss(first, old, adv, clip_range=1e-4, adv_clip_max=5.0)
    losses.mean().backward()
    assert torch.allclose(first.grad, -adv.clamp(-5, 5) / 16) and float(metrics["clipfrac"]) == 0


def test_sde_mean_kl_is_the_gaussian_kl():
    g = torch.Generator().manual_seed(5)
    mean, ref = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    std = torch.tensor([0.5, 1.0, 2.0]).view(3, 1, 1, 1)
    p = torch.distributions.Normal(mean, std.expand_as(mean))
    q = torch.distributions.Normal(ref, std.expand_as(ref))
    exact = torch.distributions.kl_divergence(p, q).mean(dim=(1, 2, 3))
    assert torch.allclose(sde_mean_kl(mean, ref, std), exact, atol=1e-6)


def _flow_grpo_dpo_pairs(prompts, rewards):
    advantages = _FlowGrpoTracker().update(prompts, rewards, type="dpo")
    idx = np.arange(len(prompts))
    keep = np.where(advantages != 0)[0]
    pairs = {}
    names = np.array(prompts)[keep]
    for name in np.unique(names):
        members = idx[keep][names == name]
        adv = advantages[members]
        chosen, rejected = (members[1], members[0]) if adv[0] == -1 else (members[0], members[1])
        pairs[name] = (int(chosen), int(rejected))
    return pairs


def test_online_dpo_pairs_equal_flow_grpo():
    rewards = torch.tensor([0.2, 0.9, 0.9, 0.1, 0.5, 0.5, 0.5, 0.5, 0.3, 0.1, 0.1, 0.7], dtype=torch.float64)
    ids = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])  # group 0: tie at the max; 1: all equal; 2: tie min
    pairs = online_dpo_pairs(rewards, ids)
    expected = _flow_grpo_dpo_pairs([f"p{int(i)}" for i in ids], rewards.numpy())
    assert [(int(c), int(r)) for c, r in zip(pairs.chosen, pairs.rejected)] == [expected[f"p{g}"] for g in range(3)]
    assert pairs.chosen.tolist() == [1, 5, 11] and pairs.rejected.tolist() == [3, 4, 9]  # ties: first index
    assert pairs.tied.tolist() == [False, True, False]
    shuffled = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    again = online_dpo_pairs(rewards[shuffled], ids[shuffled])
    assert torch.equal(rewards[shuffled][again.chosen], rewards[pairs.chosen])
    with pytest.raises(ValueError, match="need >= 2"):
        online_dpo_pairs(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 0, 1]))


def test_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        group_advantages(torch.ones(3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        group_advantages(torch.tensor([1.0, float("nan")]), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="unbiased"):
        group_advantages(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 0, 1]), unbiased=True)
