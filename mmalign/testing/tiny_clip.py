"""The tiny CLIP text encoder shared by the tiny UNet pipelines (:mod:`mmalign.testing.tiny_diffusion`) and the
tiny SD3 / FLUX pipelines (:mod:`mmalign.testing.tiny_flow`)."""

from __future__ import annotations

import torch


def tiny_clip_text_encoder(with_projection: bool = False, hidden: int = 32, seed: int = 0):
    """A random-weight ``CLIPTextModel`` (``CLIPTextModelWithProjection``) with the real CLIP vocabulary size and
    special-token ids, 2 layers of width ``hidden``: the text encoder of every tiny diffusion pipeline."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from mmalign.clip_tokenizer import MODEL_MAX_LENGTH

    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MODEL_MAX_LENGTH, projection_dim=hidden,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, hidden_act="quick_gelu",
    )
    torch.manual_seed(seed)
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(config).eval()
