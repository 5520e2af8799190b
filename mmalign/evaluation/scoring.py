"""Scorers by name for ``mmalign evaluate``: every name :func:`scorers.load_scorer` accepts (a card in
``scorers/cards`` or a card YAML path), plus ``toy-judge`` (:class:`mmalign.toy.judge_scorer.ToyJudgeScorer`,
the toy world's ground truth, which needs no weights).

Names are checked before any model loads (:func:`check_scorer_names`); the scorers themselves are loaded one at a
time after generation (:func:`load_eval_scorer`), so a large judge and a large generator never share the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

EXTRA_SCORERS = ("toy-judge",)


def known_scorers() -> list[str]:
    from scorers.cards import available_scorers

    return [*available_scorers(), *EXTRA_SCORERS]


def check_scorer_names(names: Sequence[str]) -> None:
    """A ValueError naming the first unknown scorer (and the known ones)."""
    known = known_scorers()
    for name in names:
        path = Path(name)
        if name not in known and not (path.suffix in (".yaml", ".yml") and path.is_file()):
            raise ValueError(f"--scorer: unknown scorer {name!r}; available: {', '.join(known)}")


def load_eval_scorer(name: str, **kwargs: Any):
    """``toy-judge`` or ``scorers.load_scorer(name, **kwargs)`` (checkpoint, device, dtype, card overrides)."""
    if name == "toy-judge":
        from mmalign.toy.judge_scorer import ToyJudgeScorer

        return ToyJudgeScorer()
    from scorers import load_scorer

    return load_scorer(name, **kwargs)


def score_images(scorer, images: np.ndarray, prompts: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """``scorer.score`` of uint8 ``(N, H, W, 3)`` images (as PIL images) against one prompt each: float64 ``[N]``."""
    from PIL import Image

    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    if len(images) == 0:
        return np.zeros(0)
    pil = [Image.fromarray(im) for im in images]
    return scorer.score(pil, list(prompts), batch_size=batch_size).double().numpy()
