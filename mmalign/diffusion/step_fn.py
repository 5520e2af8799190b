"""The ``step_fn(model, batch)`` of the diffusion family: the registered step of ``method.name``
(:mod:`mmalign.diffusion.registry`) over a :class:`~mmalign.diffusion.step_context.StepContext`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mmalign.diffusion.registry import method_spec
from mmalign.diffusion.step_context import Metrics, StepContext


def _empty_step(policy) -> tuple[torch.Tensor, Metrics]:
    """A batch whose items were all unreadable: a zero loss that still touches the graph (DDP-safe)."""
    params = [p for p in policy.parameters() if p.requires_grad]
    return sum(p.sum() * 0.0 for p in params[:1]), {}


def make_step_fn(ctx: StepContext, skip_counter: Any | None = None
                 ) -> Callable[[Any, dict[str, Any]], tuple[torch.Tensor, Metrics]]:
    """The ``step_fn(model, batch)`` for :func:`mmalign.training.loop.train`: the registered step of ``ctx.method.name``;
    ``skip_counter`` (a :class:`mmalign.data.SkipCounter`) counts the readers' skipped items carried in
    ``batch["skipped"]``."""
    method = method_spec(ctx.method.name).hook("step")

    def step_fn(policy, batch: dict[str, Any]) -> tuple[torch.Tensor, Metrics]:
        if skip_counter is not None and "skipped" in batch:
            skip_counter.update(batch)
        if not batch.get("groups"):
            return _empty_step(policy)
        return method(ctx, policy, batch)

    return step_fn
