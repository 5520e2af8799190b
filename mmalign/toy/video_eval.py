"""Direction accuracy of a video LLM on the toy clips (:mod:`mmalign.toy.videos`).

For each clip the model scores the four one-word answers ``left / right / up / down`` to the direction question
(summed completion log-probs, same batching as training) and the highest-scoring one is its answer —
forced-choice accuracy, chance = 0.25. Greedy generation is available through
:func:`mmalign.mllm.video.temple_pairs.generate_answer` when free-form answers are wanted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mmalign.data.video_io import read_video
from mmalign.mllm.forward import forward_logits
from mmalign.mllm.video.batch import VideoRow, VideoRowCollator, score_logits
from mmalign.toy.videos import DIRECTIONS, load_manifest


@torch.no_grad()
def direction_choices(model: torch.nn.Module, processor, clips: Sequence[tuple[np.ndarray, str]],
                      batch_clips: int = 8, collate: VideoRowCollator | None = None) -> list[str]:
    """The answer the model prefers for each ``(frames, question)`` (pass ``collate`` to reuse its cache)."""
    collate = collate or VideoRowCollator(processor)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    answers: list[str] = []
    try:
        for start in range(0, len(clips), batch_clips):
            chunk = clips[start:start + batch_clips]
            items = [tuple(VideoRow(f, q, d) for d in DIRECTIONS) for f, q in chunk]
            batch = {k: v.to(device) for k, v in collate(items).items()}
            logps, _ = score_logits(forward_logits(model, batch), batch)
            scores = logps.sum(-1).view(len(DIRECTIONS), len(chunk))  # rows are [all first; all second; ...]
            answers += [DIRECTIONS[int(i)] for i in scores.argmax(0)]
    finally:
        model.train(was_training)
    return answers


def direction_accuracy(model: torch.nn.Module, processor, clips: Sequence[tuple[np.ndarray, str]],
                       truths: Sequence[str], collate: VideoRowCollator | None = None) -> float:
    """Fraction of clips whose preferred answer equals the truth."""
    answers = direction_choices(model, processor, clips, collate=collate)
    return float(np.mean([a == t for a, t in zip(answers, truths)]))


def toy_accuracy(cfg: Any, model: torch.nn.Module, processor: Any) -> float | None:
    """``recipes/video.py``'s toy metric: forced-choice direction accuracy on ``cfg.eval.toy_manifest`` (clips read
    with ``cfg.video``); None when no manifest is set."""
    if not cfg.eval.toy_manifest:
        return None
    rows = load_manifest(cfg.eval.toy_manifest, cfg.eval.split)
    clips = [(read_video(r["video"], cfg.video).frames, r["questions"][0]["question"]) for r in rows]
    return direction_accuracy(model, processor, clips, [r["direction"] for r in rows])
