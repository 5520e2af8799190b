"""The per-epoch reward statistics every online method logs (TensorBoard through the loop, ``summary.json``)."""

from __future__ import annotations

import torch


def reward_stats(total: torch.Tensor, terms: dict[str, torch.Tensor], group_size: int) -> dict[str, float]:
    """``reward/mean``, ``reward/std`` of the weighted total, ``reward/<term>/mean`` / ``/std`` of each scorer's raw
    score, ``zero_std_fraction`` (groups of ``group_size`` whose totals are all equal: no signal) and
    ``reward/group_std`` (mean within-group std)."""
    total = total.float()
    groups = total.view(-1, group_size)
    out = {"reward/mean": float(total.mean()), "reward/std": float(total.std(unbiased=False)),
           "reward/group_std": float(groups.std(dim=1, unbiased=False).mean()),
           "zero_std_fraction": float((groups.max(dim=1).values == groups.min(dim=1).values).float().mean())}
    for name, value in terms.items():
        out[f"reward/{name}/mean"] = float(value.float().mean())
        out[f"reward/{name}/std"] = float(value.float().std(unbiased=False))
    return out
