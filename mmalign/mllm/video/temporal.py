"""TEMPLE's temporal perturbations — drop, shuffle, reverse — at magnitudes 16, 8, 4, 2.

Source: TEMPLE (Li et al., arXiv 2503.16929), official code ``lscpku/TEMPLE``
``inference/generator_base.py::generate_rejected_response``. Over ``N`` units (clip captions, clips of
frames, or single frames) with magnitude ``m``:

* ``drop``: keep ``max(1, N // m)`` units chosen at random, in their original order;
* ``shuffle``: cut into contiguous groups of ``g = max(1, N // m)`` units (the last group may be shorter),
  shuffle the order of the groups;
* ``reverse``: the same groups in reverse order (units inside a group keep their order).

Larger ``m`` disrupts more (more units dropped; more, smaller groups permuted) and makes the *easier*
negative; ``m = 2`` is the mildest and hardest. TEMPLE's curriculum runs r16 → r8 → r4 → r2.

The official code draws from the global ``random`` state; here every call takes a ``seed`` (or a
``random.Random``) so a perturbation is reproducible. ``avoid_identity=True`` (not in the official code,
off by default) redraws a shuffle that happens to leave the order unchanged.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")

KINDS = ("drop", "shuffle", "reverse")
MAGNITUDES = (16, 8, 4, 2)
"""TEMPLE's magnitudes, easy → hard (the curriculum order)."""


def _rng(seed: int | random.Random) -> random.Random:
    return seed if isinstance(seed, random.Random) else random.Random(seed)


def contiguous_groups(n: int, magnitude: int) -> list[list[int]]:
    """``[[0..g-1], [g..2g-1], ...]`` with ``g = max(1, n // magnitude)``."""
    size = max(1, n // magnitude)
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def perturb_indices(n: int, kind: str, magnitude: int, seed: int | random.Random = 0,
                    avoid_identity: bool = False) -> list[int]:
    """Indices of the ``n`` units that the perturbed sequence holds, in their new order."""
    if kind not in KINDS:
        raise ValueError(f"perturbation kind must be one of {KINDS}, got '{kind}'")
    if magnitude < 1:
        raise ValueError(f"perturbation magnitude must be >= 1, got {magnitude}")
    if n < 1:
        raise ValueError("cannot perturb an empty sequence")
    rng = _rng(seed)
    if kind == "drop":
        keep = max(1, n // magnitude)
        return sorted(rng.sample(range(n), k=keep))
    groups = contiguous_groups(n, magnitude)
    if kind == "reverse":
        return [i for g in reversed(groups) for i in g]
    order = list(groups)
    for _ in range(100):
        rng.shuffle(order)
        if not avoid_identity or len(groups) < 2 or order != groups:
            break
    return [i for g in order for i in g]


def perturb_sequence(items: Sequence[T], kind: str, magnitude: int, seed: int | random.Random = 0,
                     avoid_identity: bool = False) -> tuple[list[T], list[int]]:
    """Perturb a list of units (clip captions, clips); return the new list and the source indices."""
    idx = perturb_indices(len(items), kind, magnitude, seed, avoid_identity)
    return [items[i] for i in idx], idx


def perturb_frames(frames: np.ndarray, kind: str, magnitude: int, seed: int | random.Random = 0,
                   frames_per_clip: int = 1, avoid_identity: bool = False) -> tuple[np.ndarray, list[int]]:
    """Perturb a ``(T, ...)`` frame array in units of ``frames_per_clip`` consecutive frames.

    ``frames_per_clip=2`` keeps Qwen-VL's temporal patches (2 frames) intact and the frame count even.
    Returns the new frames and the source frame indices.
    """
    t = len(frames)
    if t % frames_per_clip:
        raise ValueError(f"{t} frames do not split into clips of {frames_per_clip}")
    clips = perturb_indices(t // frames_per_clip, kind, magnitude, seed, avoid_identity)
    idx = [c * frames_per_clip + j for c in clips for j in range(frames_per_clip)]
    return frames[idx], idx
