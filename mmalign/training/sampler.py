"""The data order: a pure function of ``(seed, epoch)``, so a resumed run sees the uninterrupted run's batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """A random permutation that depends only on ``(seed, epoch)``: resumable and rank-independent. With
    ``weights``: ``length`` draws with replacement, P(i) proportional to ``weights[i]`` (``WeightedRandomSampler``
    semantics; Diffusion-KTO's positive-ratio sampler), from the same ``(seed, epoch)`` generator."""

    def __init__(self, length: int, seed: int, shuffle: bool = True, weights: Sequence[float] | None = None) -> None:
        self.length, self.seed, self.shuffle, self.epoch = length, seed, shuffle, 0
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        if self.weights is not None and len(self.weights) != length:
            raise ValueError(f"sampler weights: {len(self.weights)} for {length} examples")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.length))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is not None:
            return iter(torch.multinomial(self.weights, self.length, replacement=True, generator=g).tolist())
        return iter(torch.randperm(self.length, generator=g).tolist())

    def __len__(self) -> int:
        return self.length
