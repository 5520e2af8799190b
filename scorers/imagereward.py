"""ImageReward (Xu et al. 2023, arXiv 2304.05977) on transformers' BLIP classes, loaded from the official checkpoint.

Official code: PyPI ``image-reward`` 1.5 (= THUDM/ImageReward @ c1392c6), ``ImageReward/ImageReward.py``
(``_transform`` l.30-37, ``MLP`` l.40-68, ``ImageReward.__init__`` l.72-81, ``score`` l.103-137) and
``ImageReward/models/BLIP/`` (``blip_pretrain.py`` l.13-43, ``blip.py`` ``init_tokenizer`` l.16-21 /
``create_vit`` l.24-40, ``vit.py``, ``med.py``). Spec: shared/spec/scorers.md §4.

* image: BLIP ViT-L/16 (``vit.py`` ``VisionTransformer``: pre-LN blocks, fused qkv, LayerNorm eps 1e-6, final norm
  on every token) = transformers ``BlipVisionModel`` (``last_hidden_state`` is the post-layernorm of all tokens);
* text: BLIP's ``med.BertModel`` (no token-type embeddings, a cross-attention block in every layer over the image
  tokens, all-ones image mask, ``add_pooling_layer=False``) = transformers ``BlipTextModel`` with
  ``is_decoder=True`` in the config (that creates the cross-attention layers) run with the default
  ``is_decoder=False`` forward (bidirectional self-attention, as ``med.BertModel.forward(mode='multimodal')``);
* head: ``MLP(768)``: Linear layers with dropouts and no activations (the ReLUs are commented out upstream), keys
  ``mlp.layers.{0,2,4,6,7}``: the same stack as the LAION aesthetic head (:class:`scorers.heads.AestheticMLP`);
* ``reward = (MLP(h[:, 0].float()) - 0.16717362830052426) / 1.0333394966054072`` with ``h`` the text encoder's last
  hidden state (the plain ``[CLS]`` position: the ids are used as tokenised, ``[ENC]`` is not substituted).

Tokenisation: ``BertTokenizer('bert-base-uncased')`` + ``bos_token='[DEC]'`` + additional ``'[ENC]'`` (ids 30522,
30523), ``padding='max_length', truncation=True, max_length=35``. Preprocessing: torchvision ``Resize(224,
bicubic)`` (shorter side, on the PIL image) + ``CenterCrop(224)`` (round offset) + ``ToTensor`` + OpenAI
mean/std — the ``shortest`` / ``round`` path of :mod:`scorers.preprocess`. One documented difference: the official
transform converts to RGB *after* resizing (a palette image is then resized with PIL's nearest filter); here every
image is converted to RGB first, as for the other scorers.

Checkpoint (``ImageReward.pt``): a plain state dict ``blip.visual_encoder.*``, ``blip.text_encoder.*``,
``blip.{vision,text}_proj.*`` (unused by the reward), ``mlp.layers.*``; the official loader uses ``strict=False``,
here :func:`imagereward_to_hf_state_dict` renames it and the load is strict (only the two unused projections and
``position_ids`` buffers are dropped).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scorers.cards import ScorerCard
from scorers.checkpoints import load_strict, read_state_dict, resolve_checkpoint
from scorers.heads import AestheticMLP
from scorers.images import broadcast_prompts, to_pil_list
from scorers.preprocess import pil_to_pixels, tensor_to_pixels

# BLIP ViT-L/16 (blip.py create_vit 'large' l.33-38; vit.py VisionTransformer l.109-159: mlp 4, qkv bias, eps 1e-6)
VISION_CONFIG = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                     image_size=224, patch_size=16, layer_norm_eps=1e-6, hidden_act="gelu")
# med_config.json (train/src/config/med_config.json) with encoder_width set to the vision width (blip_pretrain l.35)
TEXT_CONFIG = dict(vocab_size=30524, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                   intermediate_size=3072, max_position_embeddings=512, layer_norm_eps=1e-12, hidden_act="gelu",
                   encoder_hidden_size=1024, pad_token_id=0)
_DROPPED = ("blip.vision_proj.", "blip.text_proj.")
_VIT_BLOCK = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.qkv": "self_attn.qkv",
              "attn.proj": "self_attn.projection", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_VIT_DIRECT = {"cls_token": "embeddings.class_embedding", "pos_embed": "embeddings.position_embedding",
               "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
               "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
               "norm.weight": "post_layernorm.weight", "norm.bias": "post_layernorm.bias"}


def imagereward_to_hf_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official ``ImageReward.pt`` keys -> :class:`ImageRewardModel` keys (unknown keys are kept, so a strict load
    names them)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.startswith(_DROPPED) or key.endswith("position_ids"):
            continue
        if key.startswith("blip.visual_encoder."):
            rest = key[len("blip.visual_encoder."):]
            block = re.fullmatch(r"blocks\.(\d+)\.(.+)\.(weight|bias)", rest)
            if rest in _VIT_DIRECT:
                out["vision_model." + _VIT_DIRECT[rest]] = value
                continue
            if block and block.group(2) in _VIT_BLOCK:
                i, name, kind = block.groups()
                out[f"vision_model.encoder.layers.{i}.{_VIT_BLOCK[name]}.{kind}"] = value
                continue
        elif key.startswith("blip.text_encoder."):
            out["text_encoder." + key[len("blip.text_encoder."):]] = value
            continue
        out[key] = value
    return out


class ImageRewardModel(nn.Module):
    """BLIP image encoder + image-grounded BERT + the linear MLP head (the ImageReward forward, ``score`` l.110-135)."""

    def __init__(self, vision: dict, text: dict):
        super().__init__()
        from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

        text_cfg = BlipTextConfig(**{**text, "is_decoder": True})  # is_decoder builds the cross-attention layers
        if text_cfg.encoder_hidden_size != vision["hidden_size"]:
            raise ValueError(f"imagereward arch: text encoder_hidden_size {text_cfg.encoder_hidden_size} must equal "
                             f"the vision hidden_size {vision['hidden_size']}")
        self.vision_model = BlipVisionModel(BlipVisionConfig(**vision))
        self.text_encoder = BlipTextModel(text_cfg, add_pooling_layer=False)
        self.mlp = AestheticMLP(text_cfg.hidden_size)  # ImageReward.py MLP l.40-68: the same stack

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Raw head outputs ``[B]`` (float32) before the mean/std standardisation."""
        image_embeds = self.vision_model(pixel_values=pixels).last_hidden_state
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        text = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask,
                                 encoder_hidden_states=image_embeds, encoder_attention_mask=image_atts)
        features = text.last_hidden_state[:, 0, :].float()
        return self.mlp(features).squeeze(-1)


def blip_tokenizer(source: str) -> Any:
    """``init_tokenizer`` (blip.py l.16-21): the BERT tokenizer of ``source`` plus ``[DEC]`` (bos) and ``[ENC]``."""
    from transformers import BertTokenizer

    try:
        tokenizer = BertTokenizer.from_pretrained(source)
    except OSError as exc:
        raise FileNotFoundError(f"imagereward tokenizer {source!r}: not a local tokenizer folder and not available "
                                f"offline ({str(exc).splitlines()[0]}); pass tokenizer=<folder with vocab.txt of "
                                "bert-base-uncased>") from exc
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


class ImageRewardScorer:
    """``score(images, prompts) -> Tensor[B]``: the ImageReward reward (about N(0, 1) on SD-1.4 images).

    Build it with ``scorers.load_scorer("imagereward", checkpoint=".../ImageReward.pt",
    tokenizer=".../bert-base-uncased")``. ``raw=True`` returns the head output before standardisation."""

    needs_text = True

    def __init__(self, card: ScorerCard, model: ImageRewardModel, tokenizer: Any, *,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.card = card
        self.name = card.name
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.dtype = dtype
        self.mean = float(card.reward_mean if card.reward_mean is not None else 0.0)
        self.std = float(card.reward_std if card.reward_std is not None else 1.0)
        model.to(device=self.device, dtype=dtype).eval().requires_grad_(False)
        model.mlp.to(torch.float32)  # the head runs on float32 features (score l.133)
        self.model = model

    def _tokens(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        for i, p in enumerate(prompts):
            if not p.strip():
                raise ValueError(f"prompt {i} is empty; {self.name} scores image-text agreement")
        enc = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=int(self.card.max_length or 35),
                             return_tensors="pt")
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def _formula(self, pixels: torch.Tensor, prompts: list[str], raw: bool) -> torch.Tensor:
        ids, mask = self._tokens(prompts)
        head = self.model(pixels.to(device=self.device, dtype=self.dtype), ids, mask)
        return head if raw else (head - self.mean) / self.std

    @torch.no_grad()
    def score(self, images: Any, prompts: str | Sequence[str] | None = None, *, raw: bool = False,
              batch_size: int = 32) -> torch.Tensor:
        """Rewards ``[B]`` (float32, CPU) of PIL images / paths / arrays (official PIL preprocessing)."""
        pil = to_pil_list(images)
        texts = broadcast_prompts(prompts, len(pil))
        out = [self._formula(pil_to_pixels(pil[s:s + batch_size], self.card), texts[s:s + batch_size], raw)
               for s in range(0, len(pil), batch_size)]
        return torch.cat(out).float().cpu() if out else torch.zeros(0)

    def score_tensor(self, pixels: torch.Tensor, prompts: str | Sequence[str] | None = None, *,
                     raw: bool = False) -> torch.Tensor:
        """Differentiable rewards ``[B]`` from float pixels ``[B,3,H,W]`` in [0, 1] (torch resize + crop; the
        ``score_gard`` path of the official ReFL code, l.84-100)."""
        if not torch.is_tensor(pixels) or not torch.is_floating_point(pixels):
            raise ValueError(f"score_tensor expects float pixels in [0, 1], got {getattr(pixels, 'dtype', pixels)}")
        pixels = tensor_to_pixels(pixels.to(self.device).float(), self.card)
        return self._formula(pixels, broadcast_prompts(prompts, pixels.shape[0]), raw)

    def __repr__(self) -> str:
        return f"ImageRewardScorer(name={self.name!r}, device={self.device}, dtype={self.dtype})"


def load_imagereward(card: ScorerCard, checkpoint: str | None, *, device: str | torch.device,
                     dtype: torch.dtype) -> ImageRewardScorer:
    """Build the BLIP model from the card's ``arch`` (``{"vision": ..., "text": ...}``; null = the official sizes),
    load ``ImageReward.pt`` strictly after renaming, and the tokenizer from ``card.tokenizer``."""
    arch = card.arch or {}
    if not isinstance(arch, dict) or set(arch) - {"vision", "text"}:
        raise ValueError(f"imagereward arch must be null or a dict with 'vision' / 'text' config dicts, got {arch!r}")
    path = resolve_checkpoint(checkpoint or card.default_checkpoint, f"{card.name} checkpoint")
    if path.is_dir():
        path = Path(path) / "ImageReward.pt"
    if card.tokenizer is None:
        raise ValueError(f"scorer {card.name!r}: the card names no tokenizer; pass tokenizer=<bert-base-uncased folder>")
    tokenizer = blip_tokenizer(card.tokenizer)
    model = ImageRewardModel({**VISION_CONFIG, **arch.get("vision", {})}, {**TEXT_CONFIG, **arch.get("text", {})})
    vocab = model.text_encoder.config.vocab_size
    if len(tokenizer) > vocab:
        raise ValueError(f"imagereward tokenizer {card.tokenizer} has {len(tokenizer)} tokens with [DEC]/[ENC], more "
                         f"than the text encoder's vocabulary ({vocab})")
    load_strict(model, imagereward_to_hf_state_dict(read_state_dict(path)), path)
    size = int(model.vision_model.config.image_size)
    if size != card.image_size:  # the vision tower fixes the input size (as for the CLIP scorers)
        card = dataclasses.replace(card, image_size=size)
    return ImageRewardScorer(card, model, tokenizer, device=device, dtype=dtype)
