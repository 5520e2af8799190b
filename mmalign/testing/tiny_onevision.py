"""A tiny random-weight LLaVA-OneVision (the architecture of LLaVA-Video-7B-Qwen2-hf) with its real processor.

Real classes throughout: ``LlavaOnevisionForConditionalGeneration`` (tiny SigLIP vision tower, tiny Qwen2
language model), ``LlavaOnevisionProcessor`` with ``LlavaOnevisionImageProcessor`` and
``LlavaOnevisionVideoProcessor``, and the llava-hf chat template, which renders typed content parts only. The
tokenizer is :func:`mmalign.testing.tiny_vlm.build_tokenizer`'s with ``<video>`` appended (existing ids unchanged).

Shapes: 56 px frames, patch 14 → 4 x 4 patches, pooled 2 x 2 → 4 video tokens per frame, plus one newline
token per video (16 frames: 65 tokens).
"""

from __future__ import annotations

import torch

from mmalign.testing import tiny_vlm

# The released chat template of llava-hf/llava-onevision-qwen2-*-hf and llava-hf/LLaVA-Video-7B-Qwen2-hf
# (their chat_template.json, as in transformers' tests/models/llava_onevision/test_processing_llava_onevision.py).
ONEVISION_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ '\n' + content['text'] }}{% endgeneration %}{% endfor %}{% endif %}{{'<|im_end|>'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

IMAGE_SIZE, PATCH_SIZE = 56, 14
GRID_PINPOINTS = [[56, 56], [56, 112], [112, 56], [112, 112]]


def build_tokenizer():
    """The tiny BPE tokenizer with the ``<video>`` placeholder added as a special token."""
    tokenizer = tiny_vlm.build_tokenizer()
    tokenizer.add_tokens(["<video>"], special_tokens=True)
    return tokenizer


def build_processor(tokenizer=None):
    """``LlavaOnevisionProcessor`` for 56 px images and frames, with the llava-hf OneVision chat template."""
    from transformers import (
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    tokenizer = tokenizer if tokenizer is not None and "<video>" in tokenizer.get_vocab() else build_tokenizer()
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    return LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=GRID_PINPOINTS),
        video_processor=LlavaOnevisionVideoProcessor(size=size), tokenizer=tokenizer,
        num_image_tokens=(IMAGE_SIZE // PATCH_SIZE) ** 2, vision_feature_select_strategy="full",
        chat_template=ONEVISION_TEMPLATE,
    )


def build_model(tokenizer, seed: int = 0) -> torch.nn.Module:
    """A random-weight ``LlavaOnevisionForConditionalGeneration`` whose vocabulary covers ``tokenizer``."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>",
                                                          "<image>", "<video>")}
    text = dict(tiny_vlm._TEXT, model_type="qwen2", vocab_size=len(tokenizer), bos_token_id=ids["<|im_start|>"],
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    vision = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, vision_use_head=False)
    cfg = LlavaOnevisionConfig(
        text_config=text, vision_config=vision, image_token_index=ids["<image>"], video_token_index=ids["<video>"],
        vision_feature_select_strategy="full", vision_feature_layer=-1, image_grid_pinpoints=GRID_PINPOINTS,
    )
    torch.manual_seed(seed)
    return LlavaOnevisionForConditionalGeneration(cfg)


def build(seed: int = 0) -> tuple[torch.nn.Module, object]:
    """``(model, processor)`` of the tiny LLaVA-OneVision."""
    processor = build_processor()
    return build_model(processor.tokenizer, seed), processor
