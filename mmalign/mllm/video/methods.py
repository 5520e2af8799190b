"""The video methods' key specs (:mod:`mmalign.method_registry` shape) and the ``method:`` block they read.

The DPO-family keys are shared (:data:`SHARED_KEYS`: ``method.beta`` — the preference temperature —,
``method.loss_type``, ``method.sft_weight``, ``method.label_smoothing``, ``method.gamma``); what only one method
reads is its own section, the ``options`` dataclass of its spec: ``method.vdpo.*`` (:class:`VdpoOptions`: how the
rejected video is perturbed), ``method.rrpo.*`` (:class:`RrpoOptions`: the token-KL weight and its chunking).
RRPO's ``beta`` stays shared: it is the temperature of the DPO family (spec/vlm_video_objectives.md §2: the
sub-sequence reward ``r_i(y) = beta * sum delta(t)`` inside ``-logsig(u)``, the DPO ``-logsig(beta h)`` with the
log-ratios summed over the differing phrases), only its default differs (per model, ``model.family``).

A key the user sets that no method of the run reads (``method.name``, or every stage's ``method`` for a
curriculum) is a ConfigError naming the key and the method (:func:`check_method_keys`) — another method's section
included —, where main accepted it silently (``method.alpha`` on dpo, ``method.magnitude`` on rrpo, ...). The
old flat spellings (``method.perturbations``, ``method.magnitude``, ``method.frames_per_clip``, ``method.alpha``,
``method.kl_chunk_size``) are renamed to the section of the run's method that reads them, with a deprecation note
(:data:`LEGACY_KEYS`, :func:`mmalign.method_registry.renamed_option_key`). Light: no torch, read by the schema.

It is also the one list of video methods: each entry names how an item of its data is built
(``item``, :mod:`mmalign.mllm.video.dataset`), its step builder (``step``, :mod:`mmalign.mllm.video.build`), both
``"module:function"`` imported on first use, and whether it scores against a reference.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mmalign.choices import PREFERENCE_KINDS
from mmalign.config_error import ConfigError
from mmalign.method_registry import MethodSpecBase, check_given_keys, chosen_view, renamed_option_key
from mmalign.mllm.video.temporal import KINDS
from mmalign.validate import OneOf, Range, register

SHARED_KEYS = ("beta", "loss_type", "sft_weight", "label_smoothing", "gamma")
"""The ``method.*`` keys of the DPO family; an entry's ``uses`` names the ones it reads."""
_PAIR = SHARED_KEYS


@dataclass
class VdpoOptions:
    """VDPO (``method.vdpo.*``): the rejected row is the answer on a temporally perturbed video."""

    perturbations: list[str] = field(default_factory=lambda: ["reverse", "shuffle"])
    """Temporal perturbations (drop, shuffle, reverse; :mod:`mmalign.mllm.video.temporal`) drawn per example."""
    magnitude: int = 16
    """Perturbation magnitude (TEMPLE's 16, 8, 4, 2)."""
    frames_per_clip: int = 2
    """Frames per perturbation unit (2 keeps Qwen-VL temporal patches intact)."""


@dataclass
class RrpoOptions:
    """RRPO (``method.rrpo.*``; Sarkar & Etemad 2025, ``pritamqu/RRPO``)."""

    alpha: float | None = None
    """Weight of the token-wise KL(ref || policy) on the chosen response (``loss_alpha``); None = the per-model
    default of the official run scripts (:data:`mmalign.objectives.rrpo.RRPO_DEFAULTS`, ``model.family``)."""
    kl_chunk_size: int = 256
    """Token positions per chunk of the KL computation (memory only; the value is exact)."""


@dataclass
class MethodConfig:
    """The ``method:`` block: the method, the shared DPO-family keys, and one section per method's own options."""

    name: str = "dpo"
    """rrpo | dpo (TEMPLE stages) | vdpo | sft."""
    beta: float | None = None
    """The preference temperature of dpo / vdpo / rrpo (RRPO's ``loss_beta``: the same quantity, module docstring);
    None = RRPO's per-model default (``model.family``), else 0.1."""
    loss_type: str = "sigmoid"
    """Preference loss of ``dpo``/``vdpo`` (any kind of ``mmalign.objectives.preference_loss``)."""
    sft_weight: float = 0.0
    """Weight of the token-mean NLL of chosen rows added to dpo/vdpo (TEMPLE's ms-swift rpo_alpha = 1.0)."""
    label_smoothing: float = 0.0
    """dpo/vdpo: eps of loss_type cdpo / robust / simpo (main could not set it: they ran with 0)."""
    gamma: float = 0.0
    """dpo/vdpo: SimPO target margin (loss_type simpo)."""
    vdpo: VdpoOptions = field(default_factory=VdpoOptions)
    """VDPO's perturbation of the rejected video (``method.vdpo.*``)."""
    rrpo: RrpoOptions = field(default_factory=RrpoOptions)
    """RRPO's token-KL weight and chunking (``method.rrpo.*``)."""


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
    VideoMethodSpec("vdpo", _PAIR, f"{_DATA}:perturbed_item", f"{_BUILD}:pair_builder",
                    summary="DPO family, rejected = the answer on a temporally perturbed video", options=VdpoOptions),
    VideoMethodSpec("rrpo", ("beta",), f"{_DATA}:pair_item", f"{_BUILD}:rrpo_builder", needs_rejected=True,
                    phrases=True, summary="RRPO: phrase-level ratios + token KL", options=RrpoOptions),
)}
METHODS = tuple(SPECS)
"""The video ``method.name`` values (the schema validates against them)."""


LEGACY_KEYS = {"method.perturbations": "perturbations", "method.magnitude": "magnitude",
               "method.frames_per_clip": "frames_per_clip", "method.alpha": "alpha",
               "method.kl_chunk_size": "kl_chunk_size"}
"""Flat keys of the one-block video schema and their option name in the method's own section."""


def run_methods(raw: dict) -> list[str]:
    """The methods of a run from a plain config mapping: each stage's (a curriculum) or ``method.name``."""
    stages = raw.get("stages") or []
    stages = list(stages.values()) if isinstance(stages, dict) else list(stages)  # dict: stages.N=... overrides
    names = [str(s.get("method", "dpo")) for s in stages if isinstance(s, dict)]
    return names or [str((raw.get("method") or {}).get("name", "dpo"))]


def check_method_keys(methods: list[str], given: set[str]) -> None:
    """``methods``: the methods of the run (``method.name``, or each stage's); a ``method.*`` key the user set that
    none of the methods reads is a ConfigError naming key and method (for a curriculum: and the stages' methods)."""
    run = list(dict.fromkeys(m for m in methods if m in SPECS))
    for key in sorted(k for k in given if k.startswith("method.") and k != "method.name"):
        errors = []
        for name in run:
            try:
                check_given_keys(SPECS, name, {key}, SHARED_KEYS)
            except ConfigError as exc:
                errors.append(exc)
        if run and len(errors) == len(run):
            if len(run) == 1:
                raise errors[0]
            raise ConfigError(f"{errors[0]}; no stage's method ({', '.join(run)}) reads it")


def renamed_method_key(key: str, raw: dict) -> str | None:
    """``method.magnitude`` → ``method.vdpo.magnitude``, ``method.alpha`` → ``method.rrpo.alpha``, ... for the run's
    methods (a ConfigError when none of them has the option)."""
    return renamed_option_key(SPECS, LEGACY_KEYS, key, run_methods(raw))


def chosen_sections(config: dict) -> dict:
    """A plain video config mapping with only what the run's methods read: what the saved run config holds."""
    return chosen_view(SPECS, config, SHARED_KEYS, run_methods(config))


register(MethodConfig, name=OneOf(*METHODS), beta=Range(0, low_open=True), loss_type=OneOf(*PREFERENCE_KINDS),
         sft_weight=Range(0), label_smoothing=Range(0, 0.5), gamma=Range(0))
register(VdpoOptions, perturbations=OneOf(*KINDS), magnitude=Range(1), frames_per_clip=Range(1))
register(RrpoOptions, alpha=Range(0), kl_chunk_size=Range(1))
