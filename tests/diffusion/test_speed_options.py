"""Attention backend selection: xformers only when a working build runs on the device, else SDPA with a warning."""

from __future__ import annotations

import pytest

from mmalign.diffusion.speed import set_attention, xformers_works
from mmalign.testing.tiny_diffusion import _tiny_unet, tiny_unet_config


def test_xformers_falls_back_to_sdpa_with_a_warning():
    unet = _tiny_unet(tiny_unet_config())
    ok, reason = xformers_works("cpu")
    assert not ok and reason
    with pytest.warns(UserWarning, match="xformers requested but unavailable"):
        assert set_attention(unet, "xformers", "cpu") == "sdpa"
    assert set_attention(unet, "auto", "cpu") == "sdpa"
    assert type(unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.processor).__name__ == "AttnProcessor2_0"
    with pytest.raises(ValueError, match="model.attn_implementation"):
        set_attention(unet, "flash", "cpu")
