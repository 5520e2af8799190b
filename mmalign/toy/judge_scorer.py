"""The toy world's judge behind the scorer interface (``.name``, ``.score(images, prompts, batch_size=32)``).

``mmalign evaluate --scorer toy-judge`` and the main job's ``toy_eval`` score with this one object, so the two
report the same numbers on the same images. (The ``toy`` scorer card is something else: the tiny HPS-style CLIP
trained on the toy world, a learned stand-in for HPSv2 whose scores only approximate the judge's.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .judge import combine, judge_terms

NAME = "toy-judge"


class ToyJudgeScorer:
    """``score`` = the judge's ``(color * shape * position * size) ** (1/4)`` in [0, 1] (:mod:`mmalign.toy.judge`)
    of 64x64 images against toy-grammar captions; ``terms`` gives the four terms."""

    name = NAME
    needs_text = True
    scale = "judge score in [0, 1]: ~0.97 for a render of its caption, ~0.3 with one wrong attribute"

    def terms(self, images: Any, prompts: str | Sequence[str]) -> dict[str, torch.Tensor]:
        n = len(images)
        prompts = [prompts] * n if isinstance(prompts, str) else list(prompts)
        if len(prompts) != n:
            raise ValueError(f"{NAME}: {n} images but {len(prompts)} prompts")
        return judge_terms(images, prompts)

    @torch.no_grad()
    def score(self, images: Any, prompts: str | Sequence[str] | None = None, *, batch_size: int = 32) -> torch.Tensor:
        """Scores ``[B]`` (float32, CPU); ``images``: uint8 ``(N, 64, 64, 3)``, PIL images or float ``(N,3,H,W)``."""
        if prompts is None:
            raise ValueError(f"{NAME} scores image-caption agreement: give one prompt per image")
        texts = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
        out = [combine(self.terms(images[i:i + batch_size], texts[i:i + batch_size]))
               for i in range(0, len(images), batch_size)]
        return torch.cat(out).float().cpu() if out else torch.zeros(0)
