"""The one ``lora:`` block of every recipe (diffusion, VLM, video): the same keys and meaning in all families.

``rank: 0`` means full fine-tuning (reference = a frozen copy); ``rank > 0`` trains a LoRA adapter (reference = the
same weights with the adapters disabled). Each family picks its defaults with ``field(default_factory=...)``
(diffusion: rank 8 on the UNet attention projections; VLM: rank 16 on every linear layer of the language model).
No torch import: schemas load before any model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from mmalign.validate import OneOf, Range, register

ALL_LINEAR = "all-linear"
"""``target_modules: [all-linear]``: every ``nn.Linear`` of the language model (lm_head and, unless the vision side
is trained, the vision tower and projector excluded): :func:`mmalign.mllm.model.lora_target_modules`."""
UNET_ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
"""The diffusion default: the UNet's attention projections (the diffusers DPO scripts)."""


@dataclass
class LoraConfig:
    """The ``lora:`` block (peft ``LoraConfig``).

    The rank / alpha rule is peft's (and so TRL's, diffusers'): ``alpha`` is its own setting and does not follow
    ``rank``; the adapter's output is scaled by ``alpha / rank``. A ``lora.rank=<r>`` override on the command line
    therefore changes the scale whenever the config sets an ``alpha`` (``qwen25vl_rrpo``: rank 128, alpha 256 is a
    scale of 2; ``lora.rank=8`` alone makes it 32). :func:`rank_override_note` says so when a config loads, and
    names the ``lora.alpha`` that keeps the config's scale. With ``alpha: null`` the alpha is the rank (scale 1 at
    every rank, the diffusers DPO scripts' choice).
    """

    rank: int = 8
    """LoRA rank; 0 means full fine-tuning (reference = a frozen copy of the initial weights)."""
    alpha: float | None = None
    """LoRA alpha, the scale is alpha / rank (null: equal to rank, as in the diffusers DPO scripts)."""
    dropout: float = 0.0
    """LoRA dropout (0 keeps policy forwards deterministic)."""
    target_modules: list[str] = field(default_factory=lambda: [ALL_LINEAR])
    """Module-name suffixes that get adapters, or ``[all-linear]`` (VLM / video). Diffusion default: the UNet
    attention projections to_q, to_k, to_v, to_out.0."""
    init: str = "true"
    """peft ``init_lora_weights``: true (kaiming A, zero B: peft's default) | gaussian (diffusers DPO scripts)."""

    @property
    def enabled(self) -> bool:
        """True when a LoRA adapter is trained (``rank > 0``)."""
        return self.rank > 0

    @property
    def scale_alpha(self) -> float:
        """``alpha``, or ``rank`` when alpha is null."""
        return self.alpha if self.alpha is not None else self.rank

    def peft_init(self) -> Any:
        """``init`` as peft's ``init_lora_weights`` value."""
        value = {"gaussian": "gaussian", "true": True}.get(str(self.init).lower())
        if value is None:
            raise ValueError(f"lora.init must be gaussian or true, got '{self.init}'")
        return value


def rank_override_note(config_rank: int, config_alpha: float | None, lora: LoraConfig,
                       alpha_overridden: bool) -> str | None:
    """The note printed when a command-line ``lora.rank`` changes the LoRA scale ``alpha / rank`` of the config
    (``config_rank`` / ``config_alpha``: the values before the command-line overrides); ``None`` when the scale
    stays (alpha null, full fine-tuning, rank unchanged, or ``lora.alpha`` given on the command line too)."""
    if alpha_overridden or lora.alpha is None or lora.rank == config_rank or 0 in (lora.rank, config_rank):
        return None
    before = (config_alpha if config_alpha is not None else config_rank) / config_rank
    after = lora.alpha / lora.rank
    if before == after:
        return None
    return (f"NOTE: lora.rank={lora.rank} (the config says {config_rank}) keeps lora.alpha={lora.alpha:g}, so the "
            f"LoRA scale alpha/rank changes from {before:g} to {after:g} (peft's rule: alpha does not follow the "
            f"rank); add lora.alpha={before * lora.rank:g} to keep the scale {before:g}")


def diffusion_lora(**overrides: Any) -> LoraConfig:
    """The diffusion recipe's defaults: rank 8, alpha = rank, gaussian init, the UNet attention projections."""
    return replace(LoraConfig(rank=8, alpha=None, target_modules=list(UNET_ATTENTION), init="gaussian"), **overrides)


def vlm_lora(**overrides: Any) -> LoraConfig:
    """The VLM recipe's defaults (TRL's examples): rank 16, alpha 32, every linear layer of the language model."""
    return replace(LoraConfig(rank=16, alpha=32.0), **overrides)


def video_lora(**overrides: Any) -> LoraConfig:
    """The video recipe's defaults (TEMPLE): rank 32, alpha 64, every linear layer of the language model."""
    return replace(LoraConfig(rank=32, alpha=64.0), **overrides)


def migrate_lora_block(raw: dict) -> list[tuple[str, str]]:
    """Old ``lora:`` values rewritten in ``raw`` (in place); returns ``(old, new)`` for each deprecation note.

    ``lora.enabled: false`` → ``lora.rank: 0`` (full fine-tuning); ``lora.enabled: true`` is dropped (rank > 0 is
    LoRA); a comma-separated ``lora.target_modules`` string → a list.
    """
    notes: list[tuple[str, str]] = []
    lora = raw.get("lora")
    if not isinstance(lora, dict):
        return notes
    if "enabled" in lora:
        enabled = lora.pop("enabled")
        if is_false(enabled):
            lora["rank"] = 0
        notes.append(("lora.enabled", "lora.rank (0 = full fine-tuning, > 0 = LoRA)"))
    if isinstance(lora.get("target_modules"), str):
        lora["target_modules"] = [s.strip() for s in lora["target_modules"].split(",") if s.strip()]
        notes.append(("lora.target_modules: a comma-separated string", "a list, e.g. [all-linear]"))
    if not lora:
        raw.pop("lora")
    return notes


def is_false(value: Any) -> bool:
    """A YAML / command-line false (false, no, off, 0)."""
    return value is False or str(value).strip().lower() in ("false", "no", "off", "0")


register(LoraConfig, rank=Range(0), alpha=Range(0, low_open=True), dropout=Range(0, 1, high_open=True),
         init=OneOf("gaussian", "true", "True"))
