"""The ``<family>-toy`` tiny video LLM (toy video configs): same shapes, M-RoPE base 10 so the height / width
rotary sections turn by 0.32 / 0.18 rad per visual token instead of 0.01 / 0.001 (base 10000)."""

import pytest
import torch

from mmalign.testing.tiny_video import build_tiny_video_llm


def test_toy_variant_rope_base_and_shapes():
    base, _ = build_tiny_video_llm("qwen2vl")
    toy, _ = build_tiny_video_llm("qwen2vl-toy")
    freq = toy.model.language_model.rotary_emb.inv_freq
    assert torch.allclose(freq, 10.0 ** (-torch.arange(0, 8, 2).float() / 8))  # theta^(-2i/d), d = head_dim 8
    assert torch.allclose(base.model.language_model.rotary_emb.inv_freq, 1e4 ** (-torch.arange(0, 8, 2).float() / 8))
    assert toy.config.text_config.rope_parameters["rope_theta"] == 10.0
    assert [p.shape for p in toy.parameters()] == [p.shape for p in base.parameters()]


def test_unknown_variant_is_an_error():
    with pytest.raises(ValueError, match="variant"):
        build_tiny_video_llm("qwen2vl-huge")
