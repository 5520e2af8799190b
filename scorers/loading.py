"""``load_scorer(name, checkpoint=..., device=..., dtype=..., **card_overrides)``: card -> backbone -> Scorer."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import torch

from scorers.backbones import build_backbone
from scorers.cards import load_card
from scorers.checkpoints import card_default, resolve_checkpoint
from scorers.heads import load_aesthetic_mlp
from scorers.scorer import Scorer

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def _dtype(value: str | torch.dtype) -> torch.dtype:
    if isinstance(value, torch.dtype):
        return value
    if value not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {value!r}")
    return _DTYPES[value]


def _load_imagereward(card, checkpoint, **kwargs):
    from scorers.imagereward import load_imagereward

    return load_imagereward(card, checkpoint, **kwargs)


def _load_hpsv3(card, checkpoint, **kwargs):
    from scorers.hpsv3 import load_hpsv3

    return load_hpsv3(card, checkpoint, **kwargs)


def _load_vlm_judge(card, checkpoint, **kwargs):
    from scorers.vlm_judge import load_vlm_judge

    return load_vlm_judge(card, checkpoint, **kwargs)


# Scorers that are not a CLIP backbone + formula: their own model class, dispatched by the card's backbone.
MODEL_SCORERS: dict[str, Callable[..., Any]] = {"blip": _load_imagereward, "qwen2_vl": _load_hpsv3,
                                                "image_text_to_text": _load_vlm_judge}


def load_scorer(name: str, checkpoint: str | os.PathLike | None = None, *, device: str | torch.device = "cpu",
                dtype: str | torch.dtype = torch.float32, autocast: str | None = None,
                preprocess_workers: int | None = None, **card_overrides: Any) -> Any:
    """Build the scorer ``name`` (a card in ``scorers/cards`` or a card YAML path) and load its weights strictly.

    Args:
        name: ``hpsv2``, ``hpsv2.1``, ``pickscore``, ``clipscore``, ``aesthetic``, ``toy``, ``imagereward``, ...
            CLIP cards give a :class:`Scorer`; the others (``backbone`` in ``MODEL_SCORERS``) their own scorer
            class with the same ``name`` / ``card`` / ``score(images, prompts, batch_size=...)``.
        checkpoint: local file/folder or hub reference (``org/repo`` or ``org/repo/file``); default: the card's.
            For ``aesthetic`` this is the MLP head; its CLIP backbone is ``backbone_checkpoint=`` (a card field).
        device, dtype: where and in which weight dtype the models run.
        autocast: ``"bf16"`` / ``"fp16"``: run forwards under ``torch.autocast`` (weights stay in ``dtype``).
        preprocess_workers: threads for PIL resizing (default ``min(8, cpu count)``).
        **card_overrides: card fields, e.g. ``arch="ViT-B-32"``, ``arch={<tiny open_clip or CLIPConfig dict>}``,
            ``backbone_checkpoint=<path>``, ``prefix=""``.

    Raises ``FileNotFoundError`` naming the path for a missing checkpoint, ``ValueError`` listing the first
    differing keys for a checkpoint that does not match the card's architecture.
    """
    card = load_card(name, **card_overrides)
    if card.backbone in MODEL_SCORERS:
        if autocast not in (None, "none"):
            raise ValueError(f"scorer {card.name!r}: autocast is not supported; use dtype= (e.g. bfloat16)")
        return MODEL_SCORERS[card.backbone](card, checkpoint, device=device, dtype=_dtype(dtype))
    if card.layout == "aesthetic_mlp":
        head_path = resolve_checkpoint(checkpoint or card_default(card.default_checkpoint),
                                       f"{card.name} head checkpoint")
        clip_path = resolve_checkpoint(card.backbone_checkpoint, f"{card.name} CLIP backbone checkpoint")
        backbone = build_backbone(card, clip_path)
        head = load_aesthetic_mlp(head_path, backbone.embed_dim)
    else:
        path = resolve_checkpoint(checkpoint or card_default(card.default_checkpoint), f"{card.name} checkpoint")
        backbone = build_backbone(card, path)
        head = None
    if backbone.image_size != card.image_size:  # the vision tower fixes the input size
        card = dataclasses.replace(card, image_size=backbone.image_size)
    return Scorer(card, backbone, head, device=device, dtype=_dtype(dtype), autocast=autocast,
                  preprocess_workers=preprocess_workers)
