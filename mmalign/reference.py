"""The one reference provider of every family (UNets and VLMs alike): adapters off / frozen copy / none.

* ``lora`` — the policy itself with its LoRA adapters disabled (peft ``disable_adapter()`` for a ``PeftModel``,
  diffusers / transformers ``disable_adapters()`` / ``enable_adapters()`` otherwise), re-enabled in ``finally`` so an
  exception never leaves them off. Reference = base weights, no extra memory.
* ``frozen_copy`` — a deep copy of the initial model (full fine-tuning, as the official DiffusionDPO ``ref_unet``):
  no gradients, ``eval()`` mode, on the device (and dtype) the policy trains on — a copy left on the CPU is a
  device mismatch at the first GPU step.
* ``none`` — reference-free objectives (SFT, MaPO, SimPO, ORPO).

Both references run in eval mode: the frozen copy is made ``eval()``, and the adapters-off policy is switched to
``eval()`` for the reference forward and back to its previous mode afterwards (dropout never touches a reference).

Use as ``with reference.model(policy) as ref: ...`` (or :func:`reference_model`) under ``torch.no_grad()``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from mmalign.unwrap import unwrap

__all__ = ["MODES", "ReferenceProvider", "adapters_disabled", "frozen_copy", "reference_model", "unwrap"]

MODES = ("lora", "frozen_copy", "none")


def frozen_copy(model: torch.nn.Module, device: torch.device | str | None = None,
                dtype: torch.dtype | None = None) -> torch.nn.Module:
    """A deep copy of ``model`` with ``requires_grad=False``, in ``eval()`` mode, moved to ``device`` / ``dtype``
    when given."""
    frozen = copy.deepcopy(model).requires_grad_(False).eval()
    if device is not None or dtype is not None:
        frozen.to(device=device, dtype=dtype)
    return frozen


@contextmanager
def adapters_disabled(model: Any) -> Iterator[Any]:
    """Yield ``model`` with all its LoRA adapters disabled and in eval mode; always restore both."""
    bare = unwrap(model)
    was_training = bare.training
    if hasattr(bare, "disable_adapter"):  # peft PeftModel: a context manager
        switch = bare.disable_adapter()
    elif hasattr(bare, "disable_adapters"):  # diffusers / transformers models with peft adapters added
        switch = _toggled(bare)
    else:
        raise ValueError("no reference: pass a frozen reference copy or train a peft adapter (adapters off = reference)")
    bare.eval()
    try:
        with switch:
            yield model
    finally:
        bare.train(was_training)


@contextmanager
def _toggled(bare: Any) -> Iterator[None]:
    bare.disable_adapters()
    try:
        yield
    finally:
        bare.enable_adapters()


@contextmanager
def reference_model(policy: Any, frozen: torch.nn.Module | None = None) -> Iterator[Any]:
    """The module that computes reference scores: ``frozen`` when given, else ``policy`` with adapters disabled."""
    if frozen is not None:
        yield frozen
        return
    with adapters_disabled(policy) as ref:
        yield ref


class ReferenceProvider:
    """``mode``: lora | frozen_copy | none (see the module docstring)."""

    def __init__(self, mode: str, frozen: Any | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown reference mode '{mode}'")
        if mode == "frozen_copy" and frozen is None:
            raise ValueError("frozen_copy reference needs the frozen model")
        self.mode, self.frozen = mode, frozen

    @classmethod
    def for_training(cls, model: Any, use_lora: bool, needs_reference: bool, dtype: torch.dtype | None = None,
                     device: torch.device | str | None = None) -> ReferenceProvider:
        """LoRA → adapters disabled; full fine-tune → frozen copy (on ``device``, cast to ``dtype`` when given); no
        reference → none.

        The recipes pass no ``dtype``: the frozen copy stays at the policy's own dtype (float32 trainable weights under
        mixed precision) and runs under the same autocast context as the policy, so at step 0 policy and reference are
        the same computation and give identical scores in every precision mode (pairwise losses start at exactly
        log 2; issue 27). Casting the copy to the bf16/fp16 compute dtype instead (the official DiffusionDPO
        ``ref_unet``) halves its memory but lets the reference's rounding enter the loss (step-0 loss 0.7273 / 0.8437
        instead of 0.6931 for ``sd15_dpo_full`` without autocast): the loss would then measure the rounding, not the
        policy's change. The price: the copy takes 4 bytes per parameter instead of 2 (about 10% of full
        fine-tuning's AdamW memory: fp32 weights + gradients + two moments are 16 bytes per parameter)."""
        if not needs_reference:
            return cls("none")
        if use_lora:
            return cls("lora")
        return cls("frozen_copy", frozen_copy(unwrap(model), device=device, dtype=dtype))

    @contextmanager
    def model(self, policy: Any) -> Iterator[Any]:
        if self.mode == "none":
            raise RuntimeError("this method is reference-free; no reference model was built")
        with reference_model(policy, self.frozen) as ref:
            yield ref

    def to(self, device: torch.device | str) -> ReferenceProvider:
        if self.frozen is not None:
            self.frozen.to(device)
        return self
