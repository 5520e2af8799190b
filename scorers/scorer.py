"""The scorer object: one class for every card (formulas from the card, never from the scorer's name).

Formulas (spec §2, §3, §5, §6), with ``î``, ``t̂`` the L2-normalised projected image / text embeddings:

* ``head: cosine``  ->  ``score = scale * max(cos, clamp_min)`` with ``cos = î · t̂`` and ``scale`` either a
  constant (HPSv2: 100, the benchmark tables; CLIPScore: 2.5 with per-sample clamp at 0) or the checkpoint's
  ``logit_scale.exp()`` (PickScore). ``raw=True`` returns ``cos`` (for HPSv2 exactly what ``hpsv2.score``
  returns). ``probs`` is ``softmax(logit_scale.exp() * cos)`` over the candidates of one prompt.
* ``head: aesthetic_mlp``  ->  ``score = MLP(î)`` (LAION aesthetic v2); prompts are ignored.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scorers.backbones import Backbone
from scorers.cards import ScorerCard
from scorers.images import broadcast_prompts, to_pil_list
from scorers.preprocess import pil_to_pixels, tensor_to_pixels

_AUTOCAST = {None: None, "none": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16}


class Scorer:
    """A loaded scorer. Build it with :func:`scorers.load_scorer`.

    Args:
        card: the scorer card (after overrides).
        backbone: the CLIP backbone with its weights loaded.
        head: the aesthetic MLP, for ``head: aesthetic_mlp`` cards.
        device: where the models run.
        dtype: weight dtype (``torch.float32`` by default; bf16/fp16 for memory).
        autocast: ``"bf16"`` / ``"fp16"`` to run the forward under ``torch.autocast`` (weights stay in ``dtype``),
            as the official HPSv2 code does with fp16 on GPU.
        preprocess_workers: threads for PIL resizing (default ``min(8, cpu count)``; 1 = none).
    """

    def __init__(self, card: ScorerCard, backbone: Backbone, head: nn.Module | None = None, *,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 autocast: str | None = None, preprocess_workers: int | None = None):
        if autocast not in _AUTOCAST:
            raise ValueError(f"autocast must be one of {sorted(k for k in _AUTOCAST if k)} or None, got {autocast!r}")
        if card.head == "aesthetic_mlp" and head is None:
            raise ValueError(f"scorer {card.name!r} needs an aesthetic head")
        self.card = card
        self.name = card.name
        self.backbone = backbone
        self.device = torch.device(device)
        self.dtype = dtype
        self.autocast_dtype = _AUTOCAST[autocast]
        self.preprocess_workers = preprocess_workers or min(8, os.cpu_count() or 1)
        # exp(logit_scale) from the fp32 checkpoint value: a bf16 copy would be off by ~1% (e.g. 98.9 for 100)
        self._logit_scale_exp = float(backbone.logit_scale().detach().float().exp())
        backbone.module.to(device=self.device, dtype=dtype).eval().requires_grad_(False)
        self.head = head.to(device=self.device, dtype=torch.float32).eval().requires_grad_(False) if head else None

    # ------------------------------------------------------------------------------------------------ helpers
    @property
    def needs_text(self) -> bool:
        return self.card.head == "cosine"

    @property
    def logit_scale(self) -> float:
        """``exp(logit_scale)`` of the checkpoint (read in float32 before any dtype cast)."""
        return self._logit_scale_exp

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _check_prompts(self, prompts: list[str]) -> list[str]:
        for i, p in enumerate(prompts):
            if not p.strip():
                raise ValueError(f"prompt {i} is empty; {self.name} scores image-text agreement and an empty "
                                 "prompt gives a meaningless score")
        return [self.card.prefix + p for p in prompts]

    def _embed_text(self, prompts: list[str]) -> torch.Tensor:
        """Normalised text embeddings [B,D] (float32, scorer device), each distinct prompt encoded once."""
        position = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
        ids = self.backbone.tokenize(list(position)).to(self.device)
        with self._autocast():
            feats = self.backbone.encode_text(ids)
        feats = F.normalize(feats.float(), dim=-1)
        index = torch.tensor([position[p] for p in prompts], device=self.device)
        return feats[index]

    def _embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised image embeddings [B,D] (float32) from normalised pixels."""
        with self._autocast():
            feats = self.backbone.encode_image(pixels.to(device=self.device, dtype=self.dtype))
        return F.normalize(feats.float(), dim=-1)

    def _formula(self, img: torch.Tensor, prompts: list[str] | None, raw: bool) -> torch.Tensor:
        if self.card.head == "aesthetic_mlp":
            return self.head(img).squeeze(-1).float()
        cos = (img * self._embed_text(prompts)).sum(-1)
        if raw:
            return cos
        if self.card.clamp_min is not None:
            cos = cos.clamp(min=self.card.clamp_min)
        if self.card.scale_kind == "logit_scale":
            return self._logit_scale_exp * cos
        return float(self.card.scale_value) * cos

    def _batches(self, images: Any, prompts: Any, batch_size: int):
        pil = to_pil_list(images)
        texts = self._check_prompts(broadcast_prompts(prompts, len(pil))) if self.needs_text else None
        for start in range(0, len(pil), batch_size):
            chunk = pil[start : start + batch_size]
            pixels = pil_to_pixels(chunk, self.card, self.preprocess_workers)
            yield pixels, (texts[start : start + batch_size] if texts else None)

    # ------------------------------------------------------------------------------------------------ public
    @torch.no_grad()
    def score(self, images: Any, prompts: str | Sequence[str] | None = None, *, raw: bool = False,
              batch_size: int = 32) -> torch.Tensor:
        """Scores ``[B]`` (float32, CPU) on the card's scale; ``raw=True``: the cosine (cosine heads).

        ``images``: PIL images / paths / uint8 arrays / float tensors in [0, 1] (see :mod:`scorers.images`), run
        through the official PIL preprocessing. ``prompts``: one string (broadcast) or one per image.
        """
        out = [self._formula(self._embed_pixels(px), texts, raw) for px, texts in
               self._batches(images, prompts, batch_size)]
        return torch.cat(out).float().cpu() if out else torch.zeros(0)

    def score_tensor(self, pixels: torch.Tensor, prompts: str | Sequence[str] | None = None, *,
                     raw: bool = False) -> torch.Tensor:
        """Differentiable scores ``[B]`` (float32, on the scorer's device) from float pixels ``[B,3,H,W]`` in [0,1].

        Uses torch resize/crop-or-pad/normalise (:func:`scorers.preprocess.tensor_to_pixels`), so gradients flow
        to ``pixels`` (the scorer's own weights are frozen). For use as a reward.
        """
        if not torch.is_tensor(pixels) or not torch.is_floating_point(pixels):
            raise ValueError(f"score_tensor expects float pixels in [0, 1], got {getattr(pixels, 'dtype', pixels)}")
        pixels = pixels.to(self.device)
        texts = self._check_prompts(broadcast_prompts(prompts, pixels.shape[0] if pixels.ndim == 4 else 1)) \
            if self.needs_text else None
        return self._formula(self._embed_pixels(tensor_to_pixels(pixels.float(), self.card)), texts, raw)

    @torch.no_grad()
    def probs(self, images: Any, prompt: str) -> torch.Tensor:
        """Preference probabilities over candidate images of one prompt: ``softmax(logit_scale.exp() * cos)``."""
        if not self.card.probs:
            raise ValueError(f"scorer {self.name!r} has no preference probabilities (no logit-scale objective)")
        if not isinstance(prompt, str):
            raise ValueError("probs() compares candidates for ONE prompt: pass a single string")
        cos = self.score(images, prompt, raw=True)
        return torch.softmax(self.logit_scale * cos, dim=0)

    @torch.no_grad()
    def image_embeddings(self, images: Any, *, batch_size: int = 32, normalize: bool = True) -> torch.Tensor:
        """Projected image embeddings ``[B,D]`` (float32, CPU), L2-normalised unless ``normalize=False``."""
        pil = to_pil_list(images)
        out = []
        for start in range(0, len(pil), batch_size):
            px = pil_to_pixels(pil[start : start + batch_size], self.card, self.preprocess_workers)
            px = px.to(self.device, self.dtype)
            with self._autocast():
                feats = self.backbone.encode_image(px).float()
            out.append(F.normalize(feats, dim=-1) if normalize else feats)
        return torch.cat(out).cpu() if out else torch.zeros(0, self.backbone.embed_dim)

    @torch.no_grad()
    def text_embeddings(self, prompts: str | Sequence[str], *, batch_size: int = 256,
                        normalize: bool = True) -> torch.Tensor:
        """Projected text embeddings ``[N,D]`` (float32, CPU) of the prompts (with the card's prefix)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        texts = self._check_prompts(prompts)
        out = []
        for start in range(0, len(texts), batch_size):
            ids = self.backbone.tokenize(texts[start : start + batch_size]).to(self.device)
            with self._autocast():
                feats = self.backbone.encode_text(ids).float()
            out.append(F.normalize(feats, dim=-1) if normalize else feats)
        return torch.cat(out).cpu() if out else torch.zeros(0, self.backbone.embed_dim)

    def __repr__(self) -> str:
        return (f"Scorer(name={self.name!r}, backbone={self.card.backbone}, head={self.card.head}, "
                f"device={self.device}, dtype={self.dtype}, scale={self.card.scale!r})")
