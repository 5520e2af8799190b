"""Tiny random-weight flow-matching DiT pipelines built from the real diffusers / transformers classes.

* :func:`tiny_sd3_pipeline` — ``StableDiffusion3Pipeline``: ``SD3Transformer2DModel`` (patch 2, one joint block),
  two ``CLIPTextModelWithProjection`` (hidden 32 each: joint CLIP width 64, pooled 32 + 32 = 64), an optional
  ``T5EncoderModel`` (d_model 96; the CLIP states are zero-padded to it as in ``encode_prompt``), a 16-channel
  ``AutoencoderKL`` with SD3's ``scaling_factor`` / ``shift_factor`` and no quant convs, and
  ``FlowMatchEulerDiscreteScheduler(shift=3.0)`` (the SD3/SD3.5 scheduler config);
* :func:`tiny_flux_pipeline` — ``FluxPipeline``: ``FluxTransformer2DModel`` (one double + one single block,
  packed 2x2 latents = 64 input channels, rotary axes (4, 4, 8), ``guidance_embeds`` as FLUX.1-dev), a
  ``CLIPTextModel`` (pooled 32), a ``T5EncoderModel`` (d_model 32), a 16-channel VAE with FLUX's factors and the
  FLUX scheduler config (dynamic shifting).

Tokenizers are built locally: the real CLIP BPE tokenizer (:mod:`mmalign.clip_tokenizer`) and a small T5
(Unigram, ``transformers.T5Tokenizer``) vocabulary of the toy grammar's words plus single letters. The VAE has two
blocks (downsamples by 2): a 32x32 image is a 16x16x16 latent; FLUX packs it into 8x8 = 64 tokens.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from mmalign.testing.tiny_clip import tiny_clip_text_encoder

T5_WORDS = ("a small large red green blue yellow purple orange circle square triangle on the left right at top "
            "bottom in center photo of an and with").split()
SD3_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0)
"""``stabilityai/stable-diffusion-3.5-medium`` scheduler/scheduler_config.json (also SD3-Medium)."""
FLUX_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                      max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
"""``black-forest-labs/FLUX.1-dev`` scheduler/scheduler_config.json."""


def tiny_t5_tokenizer(model_max_length: int = 512):
    """A ``T5Tokenizer`` (Unigram, sentencepiece-style ``▁`` pieces) over the toy words and the 26 letters."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -1.0) for w in T5_WORDS]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"] + [("\u2581", -3.0)]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=model_max_length)


def _t5(vocab_size: int, d_model: int, seed: int):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=16, d_ff=2 * d_model, num_layers=2, num_heads=2,
                      relative_attention_num_buckets=8, relative_attention_max_distance=32, decoder_start_token_id=0,
                      pad_token_id=0, eos_token_id=1, feed_forward_proj="gated-gelu", is_encoder_decoder=False)
    return T5EncoderModel(config).eval()


def _clip(with_projection: bool, seed: int, hidden: int = 32):
    return tiny_clip_text_encoder(with_projection=with_projection, hidden=hidden, seed=seed)


def _vae(scaling_factor: float, shift_factor: float, seed: int):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8,
        sample_size=32, scaling_factor=scaling_factor, shift_factor=shift_factor, use_quant_conv=False,
        use_post_quant_conv=False,
    ).eval()


def tiny_sd3_transformer(seed: int = 0, num_layers: int = 1):
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=16, out_channels=16, num_layers=num_layers, attention_head_dim=8,
        num_attention_heads=4, joint_attention_dim=96, caption_projection_dim=32, pooled_projection_dim=64,
        pos_embed_max_size=32,
    )


def tiny_sd3_pipeline(seed: int = 0, with_t5: bool = True, num_layers: int = 1):
    """A tiny ``StableDiffusion3Pipeline`` (SD3 / SD3.5 layout); ``with_t5=False`` drops the T5 encoder (the
    pipeline then feeds zeros in its place, as for ``text_encoder_3=None`` checkpoints)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    from mmalign.clip_tokenizer import load_clip_tokenizer

    clip_tok, t5_tok = load_clip_tokenizer(), tiny_t5_tokenizer()
    return StableDiffusion3Pipeline(
        transformer=tiny_sd3_transformer(seed + 2, num_layers), scheduler=FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER),
        vae=_vae(1.5305, 0.0609, seed), text_encoder=_clip(True, seed + 1), tokenizer=clip_tok,
        text_encoder_2=_clip(True, seed + 3), tokenizer_2=clip_tok,
        text_encoder_3=_t5(len(t5_tok), 96, seed + 4) if with_t5 else None, tokenizer_3=t5_tok if with_t5 else None,
    )


def tiny_flux_transformer(seed: int = 0, guidance_embeds: bool = True):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=guidance_embeds, axes_dims_rope=(4, 4, 8),
    )


def tiny_flux_pipeline(seed: int = 0, guidance_embeds: bool = True):
    """A tiny ``FluxPipeline``; ``guidance_embeds=True`` is the guidance-distilled FLUX.1-dev layout, False
    FLUX.1-schnell's."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    from mmalign.clip_tokenizer import load_clip_tokenizer

    t5_tok = tiny_t5_tokenizer()
    return FluxPipeline(
        transformer=tiny_flux_transformer(seed + 2, guidance_embeds),
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER), vae=_vae(0.3611, 0.1159, seed),
        text_encoder=_clip(False, seed + 1), tokenizer=load_clip_tokenizer(),
        text_encoder_2=_t5(len(t5_tok), 32, seed + 4), tokenizer_2=t5_tok,
    )


FLOW_BUILDERS = {"sd3": tiny_sd3_pipeline, "flux": tiny_flux_pipeline}


def save_tiny_flow_pipeline(kind: str, out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """``save_pretrained`` (safetensors) of a tiny ``sd3`` or ``flux`` pipeline: the released folder layout."""
    if kind not in FLOW_BUILDERS:
        raise ValueError(f"unknown tiny flow pipeline '{kind}' ({', '.join(FLOW_BUILDERS)})")
    out = Path(out_dir)
    FLOW_BUILDERS[kind](seed=seed).save_pretrained(str(out), safe_serialization=True)
    return out
