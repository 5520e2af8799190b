"""Reference-model providers (spec §0.5).

* ``lora`` — the policy UNet itself with its LoRA adapters disabled (diffusers ``disable_adapters`` /
  ``enable_adapters``, re-enabled in ``finally`` so an exception never leaves them off). Reference = base weights,
  no extra memory.
* ``frozen_copy`` — a ``deepcopy`` of the initial UNet, ``requires_grad_(False)`` (full fine-tuning, as the
  official DiffusionDPO ``ref_unet``).
* ``none`` — reference-free objectives (SFT, MaPO).

Use as ``with reference.model(policy) as ref_unet: ...`` under ``torch.no_grad()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from mmalign.reference import frozen_copy


def unwrap(module: Any) -> Any:
    """The bare module under DDP / torch.compile wrappers."""
    while True:
        if hasattr(module, "module") and isinstance(module.module, torch.nn.Module):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


@contextmanager
def adapters_disabled(unet: Any) -> Iterator[Any]:
    """Yield ``unet`` with all LoRA adapters disabled; always re-enable them."""
    bare = unwrap(unet)
    bare.disable_adapters()
    try:
        yield unet
    finally:
        bare.enable_adapters()


class ReferenceProvider:
    """``mode``: lora | frozen_copy | none."""

    def __init__(self, mode: str, frozen: Any | None = None) -> None:
        if mode not in ("lora", "frozen_copy", "none"):
            raise ValueError(f"unknown reference mode '{mode}'")
        if mode == "frozen_copy" and frozen is None:
            raise ValueError("frozen_copy reference needs the frozen UNet")
        self.mode, self.frozen = mode, frozen

    @classmethod
    def for_training(cls, unet: Any, use_lora: bool, needs_reference: bool, dtype: torch.dtype | None = None):
        """LoRA → adapters disabled; full fine-tune → frozen copy (cast to ``dtype``); no reference → none."""
        if not needs_reference:
            return cls("none")
        if use_lora:
            return cls("lora")
        return cls("frozen_copy", frozen_copy(unwrap(unet), dtype=dtype))

    @contextmanager
    def model(self, policy: Any) -> Iterator[Any]:
        if self.mode == "none":
            raise RuntimeError("this method is reference-free; no reference model was built")
        if self.mode == "lora":
            with adapters_disabled(policy) as ref:
                yield ref
        else:
            yield self.frozen

    def to(self, device: torch.device | str) -> ReferenceProvider:
        if self.frozen is not None:
            self.frozen.to(device)
        return self
