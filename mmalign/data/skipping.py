"""Counting skipped (unreadable) items across DataLoader workers.

Items are read in worker processes, so counts cannot live in the dataset. Instead every item carries its
skips (``item["skipped"]``, or the item *is* a :class:`BadSample` with ``bad_image="drop"``),
:func:`collate_skipping` moves them into ``batch["skipped"]``, and the training process feeds each batch
to one :class:`SkipCounter`::

    collate = functools.partial(collate_skipping, collate_fn=my_collate)
    counter = SkipCounter(len(dataset), dataset.max_bad_fraction)
    def step_fn(model, batch):
        counter.update(batch)          # raises TooManyBadSamplesError past the limit
        ...
    summary["data"] = counter.as_dict()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmalign.data.errors import BadSample, TooManyBadSamplesError


def collate_skipping(items: list[Any], collate_fn: Callable[[list[dict]], Any] | None = None) -> dict[str, Any]:
    """Drop :class:`BadSample` (and ``None``) entries, collect every item's ``"skipped"`` list, collate the rest.

    Returns ``collate_fn(good_items)`` (which must return a dict; default: ``{"items": good_items}``) with
    ``"skipped"`` (list of BadSample) and ``"num_items"`` (good items) added. When every item of the batch
    is bad (only possible with ``bad_image="drop"``), returns ``{"items": [], "skipped": [...],
    "num_items": 0}`` without calling ``collate_fn``.
    """
    skipped: list[BadSample] = []
    good = []
    for item in items:
        if item is None:  # a wrapper's own "unreadable" marker; its BadSample should travel in "skipped"
            continue
        if isinstance(item, BadSample):
            skipped.append(item)
            continue
        extra = item.pop("skipped", [])
        skipped.extend(extra)
        good.append(item)
    if not good:
        return {"items": [], "skipped": skipped, "num_items": 0}
    batch = collate_fn(good) if collate_fn is not None else {"items": good}
    if not isinstance(batch, dict):
        raise TypeError(f"collate_fn must return a dict, got {type(batch).__name__}")
    batch["skipped"] = skipped
    batch["num_items"] = len(good)
    return batch


class SkipCounter:
    """Counts distinct bad items seen in training; raises once they exceed ``max_bad_fraction * total``.

    ``total`` is the dataset size (divide by the number of processes when each rank counts its shard).
    Counting *distinct* ids makes the limit independent of the number of epochs.
    """

    def __init__(self, total: int, max_bad_fraction: float = 0.01) -> None:
        self.total, self.max_bad_fraction = total, max_bad_fraction
        self.bad_ids: set[str] = set()
        self.skip_events = 0
        self.last: BadSample | None = None

    def update(self, batch: dict[str, Any] | list[BadSample]) -> None:
        skipped = batch.get("skipped", []) if isinstance(batch, dict) else batch
        for bad in skipped:
            self.add(bad)

    def add(self, bad: BadSample) -> None:
        self.skip_events += 1
        self.bad_ids.add(bad.id)
        self.last = bad
        if len(self.bad_ids) > self.max_bad_fraction * self.total:
            raise TooManyBadSamplesError(
                f"{len(self.bad_ids)} of {self.total} items have unusable images (more than "
                f"max_bad_fraction={self.max_bad_fraction:.2%}); last: {bad.describe()}"
            )

    def as_dict(self) -> dict[str, Any]:
        """Counts for the run summary."""
        return {
            "bad_samples": len(self.bad_ids),
            "skip_events": self.skip_events,
            "bad_fraction": len(self.bad_ids) / max(self.total, 1),
            "max_bad_fraction": self.max_bad_fraction,
            "last_bad": self.last.describe() if self.last else None,
        }
