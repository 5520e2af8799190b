"""Architectures of the toy world's models (real diffusers / transformers / open_clip classes, tiny configs).

* VAE: ``AutoencoderKL`` 64x64x3 -> 16x16x4 (three encoder blocks, 8/16/32 channels).
* UNet: ``UNet2DConditionModel`` on 16x16x4 latents, two levels (32/64 channels), cross-attention width 32.
* Text encoder: ``CLIPTextModel`` (width 32, 2 layers) with the real CLIP BPE tokenizer; the context is 16 tokens
  (every toy caption is at most 9 with start/end tokens), which keeps cross-attention cheap.
* Scheduler: ``DDIMScheduler`` with Stable Diffusion's scaled-linear schedule (epsilon prediction).
* Scorer: an open_clip ``CLIP`` (ViT 64 px, patch 8, width 64, 3 layers; text width 32, 2 layers, context 77).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .captions import CHOICES

TEXT_CONTEXT = 16
TEXT_WIDTH = 32
SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")

VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 32), layers_per_block=1,
    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3, norm_num_groups=4,
    sample_size=64,
)
UNET_CONFIG: dict[str, Any] = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=TEXT_WIDTH, attention_head_dim=8, norm_num_groups=8,
)
SCORER_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 3, "width": 64, "head_width": 32, "patch_size": 8, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2, "mlp_ratio": 2.0},
}


def toy_token_ids(tokenizer) -> list[int]:
    """Token ids used by the toy grammar (every word of every caption, plus start/end of text)."""
    words = {"a"} | {w for values in CHOICES.values() for v in values for w in v.split()}
    ids = {tokenizer.bos_token_id, tokenizer.eos_token_id}
    for w in words:
        ids.update(tokenizer(w, add_special_tokens=False)["input_ids"])
    return sorted(ids)


def zero_unused_rows(embedding: torch.Tensor, keep: list[int]) -> None:
    """Zero the rows of a token-embedding matrix outside ``keep`` (words the toy world never uses carry no
    meaning; zero rows also compress to nothing in git)."""
    mask = torch.ones(embedding.shape[0], dtype=torch.bool)
    mask[keep] = False
    with torch.no_grad():
        embedding[mask] = 0.0


def make_tokenizer(folder: str | Path):
    """The real CLIP BPE tokenizer with the toy context length, written to ``folder`` and loaded from it."""
    from transformers import CLIPTokenizer

    from mmalign.clip_tokenizer import write_clip_tokenizer_files

    folder = write_clip_tokenizer_files(folder)
    config_file = Path(folder) / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["model_max_length"] = TEXT_CONTEXT
    config_file.write_text(json.dumps(config))
    return CLIPTokenizer.from_pretrained(str(folder))


def make_text_encoder(seed: int, tokenizer):
    """A frozen random ``CLIPTextModel``; rows of words outside the toy vocabulary are zeroed."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=TEXT_WIDTH, intermediate_size=2 * TEXT_WIDTH, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=TEXT_CONTEXT, projection_dim=TEXT_WIDTH,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, hidden_act="quick_gelu",
    )
    torch.manual_seed(seed)
    model = CLIPTextModel(config).eval()
    emb = model.get_input_embeddings().weight
    zero_unused_rows(emb.data, toy_token_ids(tokenizer))
    # keep the used rows at unit-ish scale so captions are well separated after the final layer norm
    with torch.no_grad():
        used = emb.data.abs().sum(dim=1) > 0
        emb.data[used] *= 10.0
    model.requires_grad_(False)
    return model


def make_vae(seed: int):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**VAE_CONFIG)


def make_unet(seed: int):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**UNET_CONFIG)


def make_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULE)


def make_training_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(**{k: v for k, v in SCHEDULE.items() if k not in ("set_alpha_to_one",)})


def make_scorer(seed: int):
    """The toy open_clip ``CLIP`` (random init; token rows outside the toy vocabulary zeroed)."""
    import open_clip

    from mmalign.clip_tokenizer import load_clip_tokenizer

    torch.manual_seed(seed)
    model = open_clip.CLIP(**SCORER_CONFIG)
    zero_unused_rows(model.token_embedding.weight.data, toy_token_ids(load_clip_tokenizer()))
    return model
