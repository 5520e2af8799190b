"""The frozen reference copy every family uses for full fine-tuning (LoRA runs use the adapters-off policy).

One function so that the three things a reference copy needs are never forgotten in one family: no gradients,
eval mode (dropout off), and the device (and dtype) the policy trains on — a copy left on the CPU is a device
mismatch at the first GPU step.
"""

from __future__ import annotations

import copy

import torch


def frozen_copy(model: torch.nn.Module, device: torch.device | str | None = None,
                dtype: torch.dtype | None = None) -> torch.nn.Module:
    """A deep copy of ``model`` with ``requires_grad=False``, in ``eval()`` mode, moved to ``device`` / ``dtype``
    when given."""
    frozen = copy.deepcopy(model).requires_grad_(False).eval()
    if device is not None or dtype is not None:
        frozen.to(device=device, dtype=dtype)
    return frozen
