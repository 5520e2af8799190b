"""The one ``unwrap``: the bare module under DDP / DeepSpeed / accelerate (``.module``) and torch.compile
(``._orig_mod``) wrappers. peft wrappers are kept (their adapter switches are what a reference needs); use
:func:`mmalign.mllm.forward.base_model` for the transformers model under a peft model."""

from __future__ import annotations

from typing import Any

import torch


def unwrap(module: Any) -> Any:
    """The bare module under DDP / torch.compile wrappers (any nesting)."""
    while True:
        if isinstance(getattr(module, "module", None), torch.nn.Module):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module
