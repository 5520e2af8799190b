"""The ``model:`` block of a VLM / video LLM checkpoint as :func:`mmalign.mllm.model.load_vlm` loads it (shared by
the VLM recipe, the video build and PPD's VLM user embeddings)."""

from __future__ import annotations

from dataclasses import dataclass

from mmalign.config_blocks import DTYPES, ModelConfig
from mmalign.validate import OneOf, register


@dataclass
class VLMModelConfig(ModelConfig):
    """The ``model:`` block: the shared keys (:class:`mmalign.config_blocks.ModelConfig`; ``pretrained``: hub id or
    local folder of an ``AutoModelForImageTextToText`` checkpoint and its processor; ``attn_implementation``: sdpa |
    eager | flash_attention_2 | null = transformers' default) and the VLM / video LLM ones."""

    dtype: str | None = "float32"
    """float32 | bfloat16 | float16: weights dtype (float32 by default here: full fine-tuning trains them)."""
    processor: str | None = None
    """Processor folder / hub id when it differs from ``pretrained``."""
    trust_remote_code: bool = False
    """Only for models whose code is not in transformers; off unless you trust the repository."""
    freeze_vision: bool = True
    """Freeze the vision tower and projector (no gradients, no LoRA there). Enables shared vision features."""


register(VLMModelConfig, dtype=OneOf(*DTYPES))
