"""Per-user data for PPD: shots for the user embedding, training pairs, and batches that carry the user embedding.

Leakage rule (spec §5, pitfall 3): the shots that make a user's embedding are never trained on. Each user's pairs
are shuffled with a fixed seed; the first ``n_shots`` become the shots, the rest the training pairs. Users with
fewer than ``n_shots + 1`` pairs are left out and counted.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset

from mmalign.diffusion.ppd.embeddings import Shot


def user_of(dataset, index: int) -> Any:
    """The ``user_id`` of item ``index`` without decoding images (record extras of
    :class:`mmalign.data.PreferenceDataset`, loaded with ``extra_columns=("user_id",)``)."""
    extra = dataset.records[index].extra or {}
    if "user_id" not in extra:
        raise ValueError(f"{dataset.item_id(index)}: no 'user_id' (load the data with extra_columns=('user_id',))")
    return extra["user_id"]


def split_shots(dataset, n_shots: int, seed: int = 0) -> tuple[dict[Any, tuple[list[int], list[int]]], dict[str, int]]:
    """``({user: (shot indices, training indices)}, stats)``; see the module docstring."""
    if n_shots < 1:
        raise ValueError(f"method.ppd.shots must be >= 1, got {n_shots}")
    by_user: dict[Any, list[int]] = {}
    for i in range(len(dataset)):
        by_user.setdefault(user_of(dataset, i), []).append(i)
    rng = random.Random(seed)
    splits, too_few = {}, 0
    for user in sorted(by_user, key=str):
        indices = list(by_user[user])
        if len(indices) < n_shots + 1:
            too_few += 1
            continue
        rng.shuffle(indices)
        splits[user] = (sorted(indices[:n_shots]), sorted(indices[n_shots:]))
    stats = {"users": len(splits), "users_too_few_pairs": too_few,
             "shot_pairs": sum(len(s) for s, _ in splits.values()),
             "train_pairs": sum(len(t) for _, t in splits.values())}
    return splits, stats


def read_shots(dataset, indices: list[int]) -> list[Shot]:
    """Decode the shots (an unreadable shot is an error naming the item: the embedding would silently change)."""
    shots = []
    for i in indices:
        item = dataset.read(i)
        if not isinstance(item, dict):
            raise ValueError(f"user shot unreadable: {item.describe() if hasattr(item, 'describe') else i}")
        shots.append(Shot(item.get("prompt_chosen") or item["prompt"], item["chosen"], item["rejected"]))
    return shots


class WithUser(Dataset):
    """Examples of ``base`` (a diffusion training set) with ``user_embeds`` (the user's embedding) added."""

    def __init__(self, base: Dataset, user_embedding: torch.Tensor) -> None:
        self.base, self.user_embedding = base, user_embedding

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        example = self.base[index]
        if example is None:
            return None
        return {**example, "user_embeds": self.user_embedding}


def collate_with_users(collate: Callable[[list], dict[str, Any]]) -> Callable[[list], dict[str, Any]]:
    """Wrap a diffusion collate: ``batch["user_embeds"]`` = the items' embeddings stacked, ``(B, S, H)``, in the
    order of the batch's items (``None`` examples are dropped by both)."""

    def collate_fn(examples: list[dict[str, Any] | None]) -> dict[str, Any]:
        users = [e.pop("user_embeds") for e in examples if e is not None]
        batch = collate(examples)
        if users:
            batch["user_embeds"] = torch.stack(users)
        return batch

    return collate_fn
