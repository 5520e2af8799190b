"""CLIP backbones for scorers: open_clip ``CLIP`` (HPSv2, toy) and transformers ``CLIPModel`` (PickScore,
CLIPScore, aesthetic), built from config (random weights) and then loaded strictly from a checkpoint.

Both expose the same small surface (:class:`Backbone`): projected (un-normalised) image / text features, a
tokenizer and ``logit_scale``. Text is tokenized with open_clip's bundled CLIP BPE ``SimpleTokenizer`` for both
(77 ids, padded with 0, last id forced to end-of-text on truncation): with the causal mask and end-of-text
pooling this gives the same embedding as the HF tokenizer padded to the longest prompt (spec §3 "Text"), and it
needs no tokenizer files.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scorers.cards import ScorerCard
from scorers.checkpoints import load_strict, read_folder_state_dict, read_state_dict
from scorers.convert import hf_to_open_clip_state_dict, is_open_clip_state_dict, open_clip_to_hf_state_dict


@dataclass
class Backbone:
    module: nn.Module
    """The real model (open_clip ``CLIP`` or transformers ``CLIPModel``)."""
    encode_image: Callable[[torch.Tensor], torch.Tensor]
    """Normalised pixels [B,3,S,S] -> projected image features [B,D]."""
    encode_text: Callable[[torch.Tensor], torch.Tensor]
    """Token ids [B,L] -> projected text features [B,D]."""
    tokenize: Callable[[list[str]], torch.Tensor]
    """Prompts -> token ids [B,L] (CPU)."""
    logit_scale: Callable[[], torch.Tensor]
    """The checkpoint's (log) logit scale parameter."""
    embed_dim: int
    """Dimension of the projected embeddings."""
    image_size: int
    """Input size of the vision tower."""


@functools.lru_cache(maxsize=4)
def _simple_tokenizer(context_length: int) -> Callable[[list[str]], torch.Tensor]:
    """open_clip's CLIP BPE tokenizer (built once per context length; reading the BPE file takes ~1 s)."""
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer(context_length=context_length)
    return lambda texts: tokenizer(list(texts))


# ----------------------------------------------------------------------------------------------- open_clip
def _open_clip_model_cfg(card: ScorerCard, folder_cfg: dict | None) -> tuple[str | None, dict]:
    """(model name or None, config dict) for the card's arch, or the checkpoint folder's config."""
    import open_clip

    arch = card.arch
    if isinstance(arch, dict):
        return None, dict(arch)
    if arch is None:
        if folder_cfg is None:
            raise ValueError(f"scorer {card.name!r}: no open_clip arch in the card and no open_clip_config.json "
                             "in the checkpoint folder")
        return None, dict(folder_cfg)
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise ValueError(f"unknown open_clip arch {arch!r}; see open_clip.list_models() or pass a config dict")
    return str(arch), dict(cfg)


def build_open_clip(card: ScorerCard, checkpoint: Path) -> Backbone:
    """open_clip ``CLIP`` from the card's arch (name or dict) with the checkpoint's weights, strictly.

    ``checkpoint`` is a weights file (HPSv2 ``.pt`` dict with ``state_dict``, a plain state dict, or safetensors)
    or a folder in open_clip's ``local-dir`` layout (``open_clip_config.json`` with ``model_cfg`` + weights);
    the folder's config is used when the card's ``arch`` is null. A transformers ``CLIPModel`` state dict is
    converted to open_clip keys (spec §9.6), so PickScore-layout weights also run on this backend.
    """
    import open_clip

    folder_cfg = None
    if checkpoint.is_dir():
        cfg_file = checkpoint / "open_clip_config.json"
        if cfg_file.is_file():
            folder_cfg = json.loads(cfg_file.read_text()).get("model_cfg")
        sd, source = read_folder_state_dict(checkpoint)
    else:
        sd, source = read_state_dict(checkpoint), checkpoint
    if any(k.startswith(("text_model.", "vision_model.")) for k in sd):  # an HF CLIPModel checkpoint
        sd = hf_to_open_clip_state_dict(sd)
    name, cfg = _open_clip_model_cfg(card, folder_cfg)
    text_cfg, vision_cfg = cfg.get("text_cfg", {}), cfg.get("vision_cfg", {})
    if (cfg.get("custom_text") or "hf_model_name" in text_cfg or "hf_tokenizer_name" in text_cfg
            or "timm_model_name" in vision_cfg):
        raise ValueError(f"open_clip arch {name or cfg!r}: only plain CLIP (ViT + text transformer) is supported")
    quick_gelu = bool(cfg.pop("quick_gelu", False) or card.quick_gelu)
    cfg.pop("init_logit_bias", None)
    model = open_clip.CLIP(**cfg, quick_gelu=quick_gelu)
    load_strict(model, sd, source)
    model.eval()
    tokenize = _simple_tokenizer(model.context_length)
    return Backbone(
        module=model,
        encode_image=lambda px: model.encode_image(px),
        encode_text=lambda ids: model.encode_text(ids),
        tokenize=lambda texts: tokenize(list(texts)),
        logit_scale=lambda: model.logit_scale,
        embed_dim=int(cfg["embed_dim"]),
        image_size=int(model.visual.image_size[0]),
    )


# ----------------------------------------------------------------------------------------------- transformers
def _features(out: Any) -> torch.Tensor:
    """transformers 5 returns ``BaseModelOutputWithPooling`` (projected ``pooler_output``); 4.x a tensor."""
    return getattr(out, "pooler_output", out)


def build_hf_clip(card: ScorerCard, checkpoint: Path) -> Backbone:
    """transformers ``CLIPModel`` from the folder's ``config.json`` (or the card's ``arch`` dict) with strict weights.

    ``checkpoint``: an HF folder (``config.json`` + ``model.safetensors`` / ``pytorch_model.bin`` / shards), or a
    weights file when ``arch`` is a config dict. An open_clip-layout state dict is converted (spec §9.6).
    """
    from transformers import CLIPConfig, CLIPModel

    if isinstance(card.arch, dict):
        config = CLIPConfig(**card.arch)
    elif checkpoint.is_dir() and (checkpoint / "config.json").is_file():
        config = CLIPConfig.from_pretrained(str(checkpoint))
    else:
        raise ValueError(f"scorer {card.name!r}: {checkpoint} has no config.json; pass a folder saved with "
                         "CLIPModel.save_pretrained, or arch=<CLIPConfig dict> with a weights file")
    if card.quick_gelu and card.arch is not None:
        config.text_config.hidden_act = config.vision_config.hidden_act = "quick_gelu"
    sd, source = read_folder_state_dict(checkpoint) if checkpoint.is_dir() else (read_state_dict(checkpoint),
                                                                                  checkpoint)
    if is_open_clip_state_dict(sd):
        sd = open_clip_to_hf_state_dict(sd)
    model = CLIPModel(config)
    load_strict(model, sd, source)
    model.eval()
    return Backbone(
        module=model,
        encode_image=lambda px: _features(model.get_image_features(pixel_values=px)),
        encode_text=lambda ids: _features(model.get_text_features(input_ids=ids)),
        tokenize=_simple_tokenizer(config.text_config.max_position_embeddings),
        logit_scale=lambda: model.logit_scale,
        embed_dim=int(config.projection_dim),
        image_size=int(config.vision_config.image_size),
    )


def build_backbone(card: ScorerCard, checkpoint: Path) -> Backbone:
    builders = {"open_clip": build_open_clip, "hf_clip": build_hf_clip}
    return builders[card.backbone](card, checkpoint)
