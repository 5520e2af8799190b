"""Toy preference data: base-pipeline samples labelled by the judge, in the formats ``mmalign.data`` reads.

From ``K`` samples per training caption (one seed each):

* ``pairs.parquet``        Pick-a-Pic v2 schema (caption, jpg_0, jpg_1, label_0, ...): consecutive samples of a
                           caption paired cyclically; ``label_0`` = 1 / 0 by the judge, 0.5 when the scores differ
                           by less than ``TIE_MARGIN`` (ties, removed by the readers as in Pick-a-Pic).
* ``dual_captions.parquet`` the same pairs plus ``caption_0`` / ``caption_1``: the caption the judge finds best for
                           each image among all 180 (the toy world's "re-captioner", as DCPO uses LLaVA captions).
* ``ranked.jsonl``         (prompt, images, scores): the first ``RANK_K`` samples of a caption with judge scores.
* ``unpaired.jsonl``       (prompt, image, label): every sample, label = judge score above the median of all samples (balanced).
* ``per_user.parquet``     Pick-a-Pic schema + ``user_id``: ``PAIRS_PER_USER`` random pairs per user, labelled by
                           the user's own mix of the judge's terms (``USERS``), ties removed.
* ``heldout_pairs.parquet`` judge-labelled pairs of samples for the *held-out* captions (scorer evaluation; never
                           used for training anything).

Images are JPEG (quality 95) to keep the files small.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .captions import all_captions
from .judge import best_caption, combine, judge_terms, weighted_score

TIE_MARGIN = 0.02
RANK_K = 4
PAIRS_PER_USER = 144
USERS: dict[int, dict[str, float]] = {  # user_id -> weights of the judge's terms
    0: {"color": 0.7, "shape": 0.1, "position": 0.1, "size": 0.1},
    1: {"color": 0.1, "shape": 0.7, "position": 0.1, "size": 0.1},
    2: {"color": 0.1, "shape": 0.1, "position": 0.7, "size": 0.1},
    3: {"color": 0.1, "shape": 0.1, "position": 0.1, "size": 0.7},
}
IMAGE_FORMAT = "JPEG"


def _label(s0: float, s1: float) -> float:
    if abs(s0 - s1) < TIE_MARGIN:
        return 0.5
    return 1.0 if s0 > s1 else 0.0


def _pil(images: np.ndarray) -> list[Image.Image]:
    return [Image.fromarray(im) for im in images]


def cyclic_pairs(num_captions: int, k: int) -> list[tuple[int, int]]:
    """Index pairs (i, j) into a caption-major sample array: sample s with s+1 (mod k) of each caption."""
    return [(c * k + s, c * k + (s + 1) % k) for c in range(num_captions) for s in range(k)] if k > 2 else \
        [(c * k, c * k + 1) for c in range(num_captions)]


def pair_rows(captions: list[str], images: np.ndarray, scores: torch.Tensor, pairs: list[tuple[int, int]]):
    pil = _pil(images)
    return [{"caption": captions[i], "jpg_0": pil[i], "jpg_1": pil[j],
             "label_0": _label(float(scores[i]), float(scores[j])), "model_0": "toy-base", "model_1": "toy-base",
             "has_label": True, "are_different": True} for i, j in pairs]


def write_preference_data(out: Path, captions: list[str], images: np.ndarray, k: int, seed: int) -> dict[str, float]:
    """Write the training-caption data sets (see module docstring); ``images`` are caption-major, ``k`` per caption."""
    from mmalign.data.writers import write_pickapic_parquet, write_ranked_jsonl, write_unpaired_jsonl

    out.mkdir(parents=True, exist_ok=True)
    terms = judge_terms(images, captions)
    scores = combine(terms)
    n_captions = len(captions) // k
    pairs = cyclic_pairs(n_captions, k)
    rows = pair_rows(captions, images, scores, pairs)
    write_pickapic_parquet(rows, out / "pairs.parquet", image_format=IMAGE_FORMAT)

    recaptions = best_caption(images, all_captions())
    dual = [dict(r, caption_0=recaptions[i], caption_1=recaptions[j]) for r, (i, j) in zip(rows, pairs)]
    write_pickapic_parquet(dual, out / "dual_captions.parquet", image_format=IMAGE_FORMAT)

    pil = _pil(images)
    ranked = [{"prompt": captions[c * k], "images": pil[c * k:c * k + RANK_K],
               "scores": [float(s) for s in scores[c * k:c * k + RANK_K]]} for c in range(n_captions)]
    write_ranked_jsonl(ranked, out / "ranked.jsonl", image_format=IMAGE_FORMAT)
    threshold = float(scores.median())
    unpaired = [{"prompt": captions[i], "image": pil[i], "label": bool(scores[i] > threshold),
                 "score": float(scores[i])} for i in range(len(captions))]
    write_unpaired_jsonl(unpaired, out / "unpaired.jsonl", image_format=IMAGE_FORMAT)

    rng = np.random.default_rng(seed)
    all_pairs = [(c * k + a, c * k + b) for c in range(n_captions) for a, b in itertools.combinations(range(k), 2)]
    user_rows = []
    disagreements = 0
    for user, weights in USERS.items():
        user_scores = weighted_score(terms, weights)
        chosen = rng.choice(len(all_pairs), size=min(PAIRS_PER_USER * 2, len(all_pairs)), replace=False)
        kept = 0
        for p in chosen.tolist():
            i, j = all_pairs[p]
            label = _label(float(user_scores[i]), float(user_scores[j]))
            if label == 0.5:
                continue
            disagreements += int(label != _label(float(scores[i]), float(scores[j])))
            user_rows.append({"caption": captions[i], "jpg_0": pil[i], "jpg_1": pil[j], "label_0": label,
                              "user_id": user, "has_label": True, "are_different": True})
            kept += 1
            if kept == PAIRS_PER_USER:
                break
    write_pickapic_parquet(user_rows, out / "per_user.parquet", image_format=IMAGE_FORMAT)
    labels = np.array([r["label_0"] for r in rows])
    return {
        "pairs": len(rows), "pairs_ties": int((labels == 0.5).sum()), "ranked_lists": len(ranked),
        "unpaired": len(unpaired), "unpaired_threshold": threshold, "unpaired_desirable": int(sum(r["label"] for r in unpaired)),
        "per_user_pairs": len(user_rows), "per_user_label_differs_from_judge": disagreements,
        "train_samples_judge_mean": float(scores.mean()),
    }


def write_heldout_pairs(out: Path, captions: list[str], images: np.ndarray, k: int) -> dict[str, float]:
    """Judge-labelled pairs (ties dropped) of held-out-caption samples, ``k`` per caption (caption-major)."""
    from mmalign.data.writers import write_pickapic_parquet

    scores = judge_terms(images, captions)
    scores = combine(scores)
    pairs = [(c * k + s, c * k + s + 1) for c in range(len(captions) // k) for s in range(0, k - 1, 2)]
    rows = [r for r in pair_rows(captions, images, scores, pairs) if r["label_0"] != 0.5]
    write_pickapic_parquet(rows, out / "heldout_pairs.parquet", image_format=IMAGE_FORMAT)
    return {"heldout_pairs": len(rows)}
