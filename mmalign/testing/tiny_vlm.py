"""Tiny random-weight VLM folders (real transformers classes + real processors) for tests and smoke runs.

Nothing is downloaded: a byte-level BPE tokenizer is trained in-process with the ``tokenizers`` library on a
small corpus, the special tokens each processor needs are added, and the real processor class is built from
that tokenizer and a real image-processor config. Model weights are random (``Model(Config(...))``), shapes
from ``spec/vlm_video_objectives.md`` §9. Everything is written with ``save_pretrained`` so the result loads
with ``AutoModelForImageTextToText.from_pretrained(dir)`` / ``AutoProcessor.from_pretrained(dir)``.

Usage::

    python -m mmalign.testing.tiny_vlm qwen2vl /tmp/tiny-qwen2vl      # families: qwen2vl qwen25vl llava idefics3
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

FAMILIES = ("qwen2vl", "qwen25vl", "llava", "idefics3")

_CORPUS = [
    "a small red circle on the left", "a large blue square at the top", "a green triangle in the center",
    "What is in the image? Describe the picture. Which color is the shape? Where is it?",
    "The image shows a yellow square on the right. There is a purple circle at the bottom.",
    "This is a cat. This is a dog. An orange triangle. Yes. No. I am not sure.",
    "the quick brown fox jumps over the lazy dog 0123456789 , . ! ? : ; ' \" ( ) - _ / \\",
]

# ChatML-style templates (string or list-of-parts content) for the Qwen-VL and Idefics3 tiny models; the visual
# placeholder differs per family.
_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}IMAGE_PLACEHOLDER"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_PLACEHOLDER = {
    "qwen2vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen25vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "idefics3": "<image>",
}
# The released chat template of llava-hf/llava-1.5-7b-hf (its chat_template.json, as in transformers'
# tests/models/llava/test_processing_llava.py): typed content parts only — string content renders as nothing.
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != "
    "'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', "
    "'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
_SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
    "<|video_pad|>", "<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>",
]
_TEXT = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=512,
)


def build_tokenizer(vocab_size: int = 320):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on a tiny corpus, with the VLM special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=_SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
    )


def _ids(tokenizer) -> dict[str, int]:
    return {t: tokenizer.convert_tokens_to_ids(t) for t in _SPECIAL}


def build_processor(family: str, tokenizer):
    """The real processor class of ``family`` around ``tokenizer`` with tiny image sizes."""
    template = LLAVA_TEMPLATE if family == "llava" else _TEMPLATE.replace("IMAGE_PLACEHOLDER", _PLACEHOLDER.get(family, ""))
    if family in ("qwen2vl", "qwen25vl"):
        from transformers import (
            Qwen2_5_VLProcessor,
            Qwen2VLImageProcessor,
            Qwen2VLProcessor,
            Qwen2VLVideoProcessor,
        )

        image_processor = Qwen2VLImageProcessor(
            size={"shortest_edge": 28 * 28, "longest_edge": 56 * 56}, patch_size=14, merge_size=2,
            temporal_patch_size=2,
        )
        video_processor = Qwen2VLVideoProcessor(size={"shortest_edge": 28 * 28, "longest_edge": 56 * 56})
        cls = Qwen2VLProcessor if family == "qwen2vl" else Qwen2_5_VLProcessor
        return cls(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                   chat_template=template)
    if family == "llava":
        from transformers import CLIPImageProcessor, LlavaProcessor

        image_processor = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
        return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                              vision_feature_select_strategy="default", chat_template=template,
                              num_additional_image_tokens=1)
    if family == "idefics3":
        from transformers import Idefics3ImageProcessor, Idefics3Processor

        image_processor = Idefics3ImageProcessor(
            do_image_splitting=False, size={"longest_edge": 56}, max_image_size={"longest_edge": 56},
        )
        return Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4,
                                 chat_template=template)
    raise ValueError(f"unknown tiny family '{family}'; choose one of {', '.join(FAMILIES)}")


def build_model(family: str, tokenizer, seed: int = 0, text_overrides: dict | None = None,
                vision_overrides: dict | None = None, rope_theta: float = 10000.0) -> torch.nn.Module:
    """A random-weight model of ``family`` whose vocabulary covers ``tokenizer``.

    ``text_overrides`` / ``vision_overrides`` replace entries of the text / (Qwen-VL) vision config and
    ``rope_theta`` is the (Qwen-VL M-RoPE) text rotary base; the defaults give the shapes the tests rely on."""
    ids = _ids(tokenizer)
    vocab = len(tokenizer)
    text = dict(_TEXT, **(text_overrides or {}))
    text = dict(text, vocab_size=vocab, bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"])
    torch.manual_seed(seed)
    if family in ("qwen2vl", "qwen25vl"):
        common = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                      vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
        text["rope_parameters"] = {"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": rope_theta}
        vision = dict(depth=2, hidden_size=32, num_heads=4, patch_size=14, spatial_merge_size=2,
                      temporal_patch_size=2)
        vo = vision_overrides or {}
        if family == "qwen2vl":
            from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

            cfg = Qwen2VLConfig(text_config=dict(text, model_type="qwen2_vl_text"),
                                vision_config={**vision, "embed_dim": 32, "mlp_ratio": 2, **vo}, **common)
            return Qwen2VLForConditionalGeneration(cfg)
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        cfg = Qwen2_5_VLConfig(
            text_config=dict(text, model_type="qwen2_5_vl_text"),
            vision_config={**vision, "intermediate_size": 64, "out_hidden_size": 32, "fullatt_block_indexes": [1],
                           "window_size": 56, **vo},
            **common,
        )
        return Qwen2_5_VLForConditionalGeneration(cfg)
    if family == "llava":
        from transformers import LlavaConfig, LlavaForConditionalGeneration

        cfg = LlavaConfig(
            vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=4, image_size=28, patch_size=14),
            text_config=dict(text, model_type="qwen2"), image_token_id=ids["<image>"], vision_feature_layer=-1,
            vision_feature_select_strategy="default", projector_hidden_act="gelu",
        )
        return LlavaForConditionalGeneration(cfg)
    if family == "idefics3":
        from transformers import Idefics3Config, Idefics3ForConditionalGeneration

        cfg = Idefics3Config(
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                               image_size=56, patch_size=14),
            text_config=dict(text, model_type="llama"), scale_factor=2, image_token_id=ids["<image>"],
        )
        return Idefics3ForConditionalGeneration(cfg)
    raise ValueError(f"unknown tiny family '{family}'; choose one of {', '.join(FAMILIES)}")


def write_tiny_vlm(family: str, folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny ``family`` model + processor to ``folder`` (loadable with ``from_pretrained``)."""
    folder = Path(folder)
    tokenizer = build_tokenizer()
    processor = build_processor(family, tokenizer)
    model = build_model(family, tokenizer, seed)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


if __name__ == "__main__":  # pragma: no cover - CLI convenience
    if len(sys.argv) != 3 or sys.argv[1] not in FAMILIES:
        print(f"usage: python -m mmalign.testing.tiny_vlm {{{'|'.join(FAMILIES)}}} OUT_DIR")
        raise SystemExit(2)
    print(write_tiny_vlm(sys.argv[1], sys.argv[2]))
