"""Per-sample beta for MM-DPO (MM-RLHF, Zhang et al. 2025, arXiv 2502.10391), always detached.

Modes (``method.beta_mode``):

* ``fixed``: ``beta`` for every pair.
* ``per_sample`` (paper, Dynamic Reward Scaling): ``beta_i = beta * (1 + w * (1 - exp(-k * delta_i)))`` with
  ``delta_i = max(0, R(y_w) - R(y_l))`` from the row's ``chosen_reward`` / ``rejected_reward`` (the paper gets
  them from MM-RLHF-Reward-7B). The functional form is from the paper [unverified against its text here, see
  spec §6]; rows without rewards get ``beta``.
* ``ls_factor`` (official code's data path, Kwai-YuanQi/MM-RLHF ``trl/trainer/dpo_trainer.py``):
  ``beta_i = max(1e-3, beta * (1 + w * ls_factor_i))`` with the per-row ``ls_factor`` (1.0 when absent).
  Note: the released code then *overwrites* this with a batch-level implicit beta (``implicit_beta=True`` is the
  default and never overridden), so the data factor has no effect there; ``ls_factor`` here is what the data
  path was written to do, not what the released run computed.
* ``batch_implicit`` (what the released MM-RLHF code computes, per spec §6): with ``A`` the detached log-ratio
  margins ``h = rho_w - rho_l`` of the batch gathered over all ranks, weights ``exp(-1/2 ((A - mean A) / std A)^2)``,
  a weighted draw ``S`` of ``int(0.8 |A|)`` entries without replacement, and
  ``beta_batch = max(1e-3, beta * (1 + w * (mean A_S - mean A)))`` — one beta for the whole batch. Needs at
  least 2 pairs in total (the code fails with one: NaN std, empty draw); here that raises a clear error.
  Transcribed from ``Kwai-YuanQi/MM-RLHF`` @ 7c8af1d ``trl/trainer/dpo_trainer.py`` l.797-818 (unbiased
  ``torch.std``, ``(A - mean) / (std + 1e-7)``, ``int(n * (1 - 0.2))`` draws with ``torch.multinomial`` without
  replacement); tests/mllm/vlm/test_official_parity.py compares it with that code.
"""

from __future__ import annotations

import math

import torch

BETA_MODES = ("fixed", "per_sample", "ls_factor", "batch_implicit")


def _gather(values: torch.Tensor) -> torch.Tensor:
    """All ranks' values (identity when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    parts = [torch.empty_like(values) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, values.contiguous())
    return torch.cat(parts)


def batch_implicit_beta(
    margins: torch.Tensor, beta: float, weight: float, *, fraction: float = 0.8,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """MM-RLHF code's batch-level beta from the log-ratio margins (module docstring); a detached scalar."""
    values = _gather(margins.detach().float())
    n = values.numel()
    take = int(fraction * n)
    if n < 2 or take < 1:
        raise ValueError(
            f"method.beta_mode=batch_implicit needs at least 2 pairs per step over all processes (got {n}); "
            "raise train.batch_size or use beta_mode=fixed|per_sample"
        )
    centred = (values - values.mean()) / (values.std() + 1e-7)
    weights = torch.exp(-0.5 * centred**2)
    picked = torch.multinomial(weights.cpu(), take, replacement=False, generator=generator).to(values.device)
    return (beta * (1.0 + weight * (values[picked].mean() - values.mean()))).clamp(min=1e-3)


def per_sample_beta(
    mode: str,
    beta: float,
    rewards: dict[str, torch.Tensor],
    n: int,
    *,
    weight: float = 0.1,
    k: float = 1.0,
    device: torch.device | None = None,
    margins: torch.Tensor | None = None,
) -> float | torch.Tensor:
    """``beta`` (float) for ``fixed``, else a detached ``[n]`` float32 tensor (see module docstring).
    ``batch_implicit`` needs the batch's log-ratio ``margins``."""
    if mode == "fixed":
        return beta
    if mode == "batch_implicit":
        if margins is None:
            raise ValueError("beta_mode=batch_implicit needs the log-ratio margins of the batch")
        return batch_implicit_beta(margins, beta, weight).expand(n).to(device)
    if mode == "per_sample":
        if "chosen_reward" not in rewards or "rejected_reward" not in rewards:
            raise ValueError("method.beta_mode=per_sample needs 'chosen_reward' and 'rejected_reward' in the data rows")
        delta = (rewards["chosen_reward"] - rewards["rejected_reward"]).float().clamp(min=0.0)
        scale = 1.0 + weight * (1.0 - torch.exp(-k * delta))
        out = torch.where(torch.isnan(delta), torch.ones_like(delta), scale) * beta
    elif mode == "ls_factor":
        factor = rewards.get("ls_factor", torch.ones(n))
        factor = torch.where(torch.isnan(factor), torch.ones_like(factor), factor.float())
        out = (beta * (1.0 + weight * factor)).clamp(min=1e-3)
    else:
        raise ValueError(f"method.beta_mode must be one of {BETA_MODES}, got {mode!r}")
    if out.shape[0] != n or not torch.isfinite(out).all() or math.isnan(float(out.sum())):
        raise ValueError(f"per-sample beta has shape {tuple(out.shape)} / non-finite values for a batch of {n}")
    return out.detach().to(device)
