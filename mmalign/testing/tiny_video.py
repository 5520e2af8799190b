"""Tiny random-weight video LLM folders for tests and the toy video recipes, each family in its real
chat-template style.

* ``qwen2vl`` / ``qwen25vl``: :mod:`mmalign.testing.tiny_vlm`'s Qwen-VL models (offline BPE tokenizer, real processor
  and model classes) with a ChatML chat template that also renders ``{"type": "video"}`` parts as
  ``<|vision_start|><|video_pad|><|vision_end|>``, as the real Qwen-VL templates do;
* ``llavaov``: LLaVA-OneVision / LLaVA-Video (:mod:`mmalign.testing.tiny_onevision`), the llava-hf template that
  renders typed content parts only.

Usage::

    python -m mmalign.testing.tiny_video qwen2vl /tmp/tiny-qwen2vl-video
"""

from __future__ import annotations

import sys
from pathlib import Path

from mmalign.testing import tiny_onevision, tiny_vlm

FAMILIES = ("qwen2vl", "qwen25vl", "llavaov")

TOY_VARIANT = {"text_overrides": {}, "vision_overrides": {}, "rope_theta": 10.0}
"""``<family>-toy`` (``tiny:qwen2vl-toy``, the toy video configs): the same shapes with M-RoPE base 10 instead of
10000. With head_dim 8 and ``mrope_section [2, 1, 1]`` the rotary frequencies are ``theta^(-2i/8)``, i = 0..3:
base 10000 gives the height / width sections 0.01 / 0.001 rad per token (the language model cannot tell where a
visual token is), base 10 gives 0.32 / 0.18."""

VIDEO_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_video_processor(family: str, tokenizer):
    """The family's real processor with a video-capable chat template."""
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny video family '{family}'; choose one of {', '.join(FAMILIES)}")
    if family == "llavaov":
        return tiny_onevision.build_processor(tokenizer)
    processor = tiny_vlm.build_processor(family, tokenizer)
    processor.chat_template = VIDEO_CHAT_TEMPLATE
    return processor


def build_tiny_video_llm(family: str = "qwen2vl", seed: int = 0):
    """``(model, processor)``: a random-weight video LLM of ``family`` (or ``<family>-toy``, :data:`TOY_VARIANT`)
    and its processor."""
    family, _, variant = family.partition("-")
    if variant not in ("", "toy"):
        raise ValueError(f"unknown tiny video variant '{variant}' (only '<family>-toy')")
    if family == "llavaov":
        if variant:
            raise ValueError("tiny:llavaov has no '-toy' variant")
        return tiny_onevision.build(seed)
    tokenizer = tiny_vlm.build_tokenizer()
    processor = build_video_processor(family, tokenizer)
    model = tiny_vlm.build_model(family, tokenizer, seed, **(TOY_VARIANT if variant else {}))
    return model, processor


def write_tiny_video_llm(family: str, folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny video LLM + processor to ``folder`` (loadable with ``from_pretrained``)."""
    folder = Path(folder)
    model, processor = build_tiny_video_llm(family, seed)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


if __name__ == "__main__":  # pragma: no cover - CLI convenience
    if len(sys.argv) != 3 or sys.argv[1] not in FAMILIES:
        print(f"usage: python -m mmalign.testing.tiny_video {{{'|'.join(FAMILIES)}}} OUT_DIR")
        raise SystemExit(2)
    print(write_tiny_video_llm(sys.argv[1], sys.argv[2]))
