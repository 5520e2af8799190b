"""Scorer cards: one small YAML file per scorer name in ``scorers/cards/<name>.yaml``.

A card says everything needed to build and run a scorer; code never special-cases a scorer by name.
Format (sections are for reading only; every key must be one of the :class:`ScorerCard` fields)::

    name: hpsv2
    description: one line
    scale: the documented output scale (shown by ``mmalign score`` and in docs)
    backbone:   {backbone: open_clip|hf_clip, arch: <open_clip name | config dict | null>, quick_gelu: bool}
    preprocess: {resize: longest|shortest, resize_on: pil|tensor, image_size: 224, crop_offset: floor|round,
                 mean: [...], std: [...]}
    text:       {prefix: ""}
    formula:    {head: cosine|aesthetic_mlp, scale_kind: constant|logit_scale, scale_value: 100.0,
                 clamp_min: null|0.0, probs: bool}
    checkpoint: {layout: open_clip_state_dict|hf_clip_folder|aesthetic_mlp, default_checkpoint: <hub ref|null>,
                 backbone_checkpoint: <path|hub ref|null>}

``load_card(name, **overrides)`` applies keyword overrides by field name (``arch="ViT-B-32"``,
``arch={...tiny config...}``, ``image_size=32``, ``prefix=""``); an unknown key is an error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CARD_DIR = Path(__file__).parent / "cards"
SECTIONS = ("backbone", "preprocess", "text", "formula", "checkpoint")
_CHOICES = {
    "backbone": ("open_clip", "hf_clip", "blip", "qwen2_vl", "image_text_to_text"),
    "resize": ("longest", "shortest"),
    "resize_on": ("pil", "tensor"),
    "crop_offset": ("floor", "round"),
    "head": ("cosine", "aesthetic_mlp", "imagereward_mlp", "hpsv3_ranknet", "vlm_answer"),
    "scale_kind": ("constant", "logit_scale"),
    "layout": ("open_clip_state_dict", "hf_clip_folder", "aesthetic_mlp", "imagereward_state_dict", "hpsv3_state_dict",
               "hf_vlm_folder"),
}
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ScorerCard:
    name: str
    """Scorer name (the card's file stem)."""
    description: str = ""
    """One-line description."""
    scale: str = ""
    """Documented output scale of ``score()``."""
    backbone: str = "open_clip"
    """``open_clip`` (open_clip ``CLIP``), ``hf_clip`` (transformers ``CLIPModel``), ``blip`` (ImageReward:
    transformers ``BlipVisionModel`` + ``BlipTextModel``), ``qwen2_vl`` (HPSv3: transformers ``Qwen2VLModel`` + the
    reward head) or ``image_text_to_text`` (VLM judge: any checkpoint ``mmalign.mllm`` loads)."""
    arch: Any = None
    """open_clip model name or config dict; for ``hf_clip`` a ``CLIPConfig`` dict (None: from the checkpoint)."""
    quick_gelu: bool = False
    """QuickGELU activation (OpenAI weights) when building from an open_clip config."""
    resize: str = "shortest"
    """``longest`` (HPSv2: longest side + zero pad) or ``shortest`` (OpenAI: shortest side + centre crop)."""
    resize_on: str = "pil"
    """Where ``score()`` resizes: ``pil`` (PIL bicubic on the image: OpenAI clip, HF processors, upstream open_clip)
    or ``tensor`` (the official HPSv2 transform: ``ToTensor`` first, then torchvision bicubic with antialias on the
    float tensor, no clamp; ``scorers.preprocess``)."""
    image_size: int = 224
    """Square input size of the vision tower."""
    crop_offset: str = "floor"
    """Centre-crop offset: ``floor`` ((s - c) // 2, transformers) or ``round`` (torchvision ``CenterCrop``)."""
    mean: tuple[float, ...] = OPENAI_MEAN
    """Per-channel normalisation mean."""
    std: tuple[float, ...] = OPENAI_STD
    """Per-channel normalisation std."""
    prefix: str = ""
    """Text prepended to every prompt (Hessel's CLIPScore: ``"A photo depicts "``)."""
    head: str = "cosine"
    """``cosine`` (scale * cos(image, text)) or ``aesthetic_mlp`` (MLP on the L2-normalised image embedding)."""
    scale_kind: str = "constant"
    """Multiplier of the cosine: ``constant`` (``scale_value``) or ``logit_scale`` (checkpoint's exp(logit_scale))."""
    scale_value: float | None = 1.0
    """The constant multiplier when ``scale_kind == constant``."""
    clamp_min: float | None = None
    """Lower clamp of the cosine applied per sample before scaling (CLIPScore: 0)."""
    probs: bool = False
    """Whether ``probs()`` (softmax of logit_scale.exp() * cos over candidates) is offered."""
    layout: str = "open_clip_state_dict"
    """Checkpoint layout: ``open_clip_state_dict``, ``hf_clip_folder`` or ``aesthetic_mlp``."""
    default_checkpoint: str | None = None
    """Hub reference used when no checkpoint is given (``org/repo`` folder or ``org/repo/file``)."""
    backbone_checkpoint: str | None = None
    """Separate CLIP backbone checkpoint (aesthetic: the CLIP ViT-L/14 under the MLP head)."""
    tokenizer: str | None = None
    """Tokenizer folder or hub id (ImageReward: the ``bert-base-uncased`` tokenizer, plus BLIP's two added tokens)."""
    max_length: int | None = None
    """Text length the tokenizer pads / truncates to (ImageReward: 35)."""
    reward_mean: float | None = None
    """Reward standardisation: ``score = (head - reward_mean) / reward_std`` (ImageReward's constants)."""
    reward_std: float | None = None
    """See ``reward_mean``."""
    pixels: int | None = None
    """HPSv3: every image is resized (Qwen2-VL smart resize, factor 28) to about this many pixels (min = max)."""
    question: str | None = None
    """VLM judge: the user question, with ``{prompt}`` where the image's prompt goes (one image)."""
    answers: tuple[str, ...] | None = None
    """VLM judge: the answer strings whose log-probabilities are read (``[Yes, No]`` or ``[1, ..., 10]``)."""
    answer_values: tuple[float, ...] | None = None
    """VLM judge: the value of each answer; ``score = sum_a value_a p(a) / sum_a p(a)`` over ``answers``."""
    pair_question: str | None = None
    """VLM judge pairwise mode: a question about two images (first, second) with ``{prompt}``; ``pair_answers``
    name the first and the second image."""
    pair_answers: tuple[str, ...] | None = None
    """VLM judge pairwise mode: ``[answer meaning the first image, answer meaning the second]``."""
    extra: dict = field(default_factory=dict)
    """Free-form notes (ignored by code)."""


FIELDS = tuple(f.name for f in dataclasses.fields(ScorerCard))


def available_scorers() -> list[str]:
    """Names of the cards shipped in ``scorers/cards``."""
    return sorted(p.stem for p in CARD_DIR.glob("*.yaml"))


def _flatten(raw: dict, source: str) -> dict:
    flat: dict = {}
    for key, value in raw.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ValueError(f"{source}: section '{key}' must be a mapping")
            for sub_key, sub_value in value.items():
                if sub_key in flat:
                    raise ValueError(f"{source}: key '{sub_key}' given twice")
                flat[sub_key] = sub_value
        else:
            flat[key] = value
    return flat


def _validate(values: dict, source: str) -> dict:
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"{source}: unknown card key(s) {unknown}; allowed: {list(FIELDS)}")
    for key, choices in _CHOICES.items():
        if key in values and values[key] not in choices:
            raise ValueError(f"{source}: {key}={values[key]!r} is not one of {list(choices)}")
    for key in ("mean", "std"):
        if key in values:
            if len(values[key]) != 3:
                raise ValueError(f"{source}: {key} must have 3 values, got {values[key]!r}")
            values[key] = tuple(float(v) for v in values[key])
    if "image_size" in values:
        values["image_size"] = int(values["image_size"])
    for key in ("answers", "pair_answers"):
        if values.get(key) is not None:
            values[key] = tuple(str(v) for v in values[key])
    if values.get("answer_values") is not None:
        values["answer_values"] = tuple(float(v) for v in values["answer_values"])
    return values


def load_card(name_or_path: str | Path, **overrides: Any) -> ScorerCard:
    """Read a card by scorer name (``scorers/cards/<name>.yaml``) or by YAML path, then apply overrides."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = CARD_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ValueError(f"unknown scorer {str(name_or_path)!r}; available: {available_scorers()}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a scorer card must be a YAML mapping")
    values = _validate(_flatten(raw, str(path)), str(path))
    values.setdefault("name", path.stem)
    values.update(_validate(dict(overrides), "card override"))
    card = ScorerCard(**values)
    if card.scale_kind == "constant" and card.scale_value is None:
        raise ValueError(f"{path}: scale_kind 'constant' needs scale_value")
    return card
