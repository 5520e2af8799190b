"""The video methods' key specs (:mod:`mmalign.method_registry` shape): which ``method.*`` keys each method reads.

A key the user sets that no method of the run reads (``method.name``, or every stage's ``method`` for a
curriculum) is a ConfigError naming the key and the method (:func:`check_method_keys`), where main accepted it
silently (``method.alpha`` on dpo, ``method.magnitude`` on rrpo, ...). Light: no torch, read by the schema.
It is also the one list of video methods: each entry names how an item of its data is built
(``item``, :mod:`mmalign.mllm.video.dataset`), its step builder (``step``, :mod:`mmalign.mllm.video.build`), both
``"module:function"`` imported on first use, and whether it scores against a reference.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mmalign.config_error import ConfigError
from mmalign.method_registry import MethodSpecBase, check_given_keys

_PAIR = ("beta", "loss_type", "sft_weight", "label_smoothing", "gamma")
_PERTURB = ("perturbations", "magnitude", "frames_per_clip")


@dataclass(frozen=True)
class VideoMethodSpec(MethodSpecBase):
    name: str
    uses: tuple[str, ...]
    item: str
    """``module:function`` ``(dataset, i, record, frames, row) -> tuple[VideoRow, ...]``: one item of its data."""
    step: str
    """``module:function`` ``(cfg, ref_model) -> step_fn``."""
    needs_reference: bool = True
    needs_rejected: bool = False
    """Rows must carry a rejected answer."""
    phrases: bool = False
    """Items carry RRPO phrase ids (needs the tokenizer)."""
    summary: str = ""
    options: type | None = None
    ignores: tuple[str, ...] = ()

    def hook(self, name: str) -> Callable[..., Any]:
        """The callable of ``item`` or ``step``."""
        module, function = getattr(self, name).split(":")
        return getattr(importlib.import_module(module), function)


_DATA, _BUILD = "mmalign.mllm.video.dataset", "mmalign.mllm.video.build"
SPECS: dict[str, VideoMethodSpec] = {s.name: s for s in (
    VideoMethodSpec("sft", (), f"{_DATA}:response_item", f"{_BUILD}:sft_builder", needs_reference=False,
                    summary="token-mean NLL of the responses"),
    VideoMethodSpec("dpo", _PAIR, f"{_DATA}:pair_item", f"{_BUILD}:pair_builder", needs_rejected=True,
                    summary="DPO family on chosen / rejected answers to the same video (TEMPLE stages)"),
    VideoMethodSpec("vdpo", _PAIR + _PERTURB, f"{_DATA}:perturbed_item", f"{_BUILD}:pair_builder",
                    summary="DPO family, rejected = the answer on a temporally perturbed video"),
    VideoMethodSpec("rrpo", ("beta", "alpha", "kl_chunk_size"), f"{_DATA}:pair_item", f"{_BUILD}:rrpo_builder",
                    needs_rejected=True, phrases=True, summary="RRPO: phrase-level ratios + token KL"),
)}
METHODS = tuple(SPECS)
"""The video ``method.name`` values (the schema validates against them)."""


def check_method_keys(methods: list[str], given: set[str], shared: tuple[str, ...]) -> None:
    """``methods``: the methods of the run (``method.name``, or each stage's); ``shared``: the schema's ``method.*``
    keys; a ``method.*`` key the user set that none of the methods reads is a ConfigError naming key and method."""
    for key in sorted(k for k in given if k.startswith("method.") and k != "method.name"):
        errors = []
        for name in dict.fromkeys(methods):
            try:
                check_given_keys(SPECS, name, {key}, shared)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == len(set(methods)):
            raise errors[0]
