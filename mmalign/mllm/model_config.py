"""The ``model:`` block of a VLM / video LLM checkpoint as :func:`mmalign.mllm.model.load_vlm` loads it (shared by
the VLM recipe, the video build and PPD's VLM user embeddings)."""

from __future__ import annotations

from dataclasses import dataclass

from mmalign.config import MISSING
from mmalign.validate import OneOf, register


@dataclass
class VLMModelConfig:
    """The ``model:`` block."""

    pretrained: str = MISSING
    """Hub id or local folder of an ``AutoModelForImageTextToText`` checkpoint (and its processor)."""
    processor: str | None = None
    """Processor folder / hub id when it differs from ``pretrained``."""
    dtype: str = "float32"
    """float32 | bfloat16 | float16: weights dtype."""
    attn_implementation: str | None = "sdpa"
    """sdpa | eager | flash_attention_2 (``None``: transformers' default)."""
    trust_remote_code: bool = False
    """Only for models whose code is not in transformers; off unless you trust the repository."""
    freeze_vision: bool = True
    """Freeze the vision tower and projector (no gradients, no LoRA there). Enables shared vision features."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward (saves memory)."""


register(VLMModelConfig, dtype=OneOf("float32", "bfloat16", "float16"))
