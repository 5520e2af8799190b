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
    summary["data"]["skips"] = counter.as_dict()

It is the one bad-row counter of every family (diffusion cache pass and pixel steps, VLM rows and images, video
rows): ``data.on_bad_row`` (skip | error) and ``data.max_bad_fraction`` mean the same everywhere, and every run's
``summary.json`` holds its report under ``data.skips``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmalign.choices import ON_BAD_ROW
from mmalign.data.errors import BadSample, TooManyBadSamplesError

__all__ = ["ON_BAD_ROW", "SkipCounter", "collate_skipping"]


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
    """Counts distinct bad items; raises once they exceed ``max_bad_fraction * total`` (or at the first one with
    ``on_bad_row="error"``).

    ``total`` is the dataset size (divide by the number of processes when each rank counts its shard).
    Counting *distinct* ids makes the limit independent of the number of epochs. Bad items arrive as
    :class:`BadSample` (:meth:`update`, :meth:`add`) or as an id and a reason (:meth:`skip`: a video that does not
    decode); :meth:`note_dropped` records rows dropped when the data was read, reported but not counted.
    """

    def __init__(self, total: int, max_bad_fraction: float = 0.01, on_bad_row: str = "skip",
                 what: str = "items") -> None:
        if on_bad_row not in ON_BAD_ROW:
            raise ValueError(f"data.on_bad_row must be one of {', '.join(ON_BAD_ROW)}, got {on_bad_row!r}")
        self.total, self.max_bad_fraction, self.on_bad_row, self.what = total, max_bad_fraction, on_bad_row, what
        self.bad_ids: set[str] = set()
        self.skip_events = 0
        self.last: str | None = None
        self.dropped: list[str] = []

    def update(self, batch: dict[str, Any] | list[BadSample]) -> None:
        skipped = batch.get("skipped", []) if isinstance(batch, dict) else batch
        for bad in skipped:
            self.add(bad)

    def add(self, bad: BadSample) -> None:
        self.skip(bad.id, bad.describe())

    def skip(self, item_id: str, description: str) -> None:
        """Count the bad item ``item_id`` (``description`` names file, row, field and reason)."""
        self.skip_events += 1
        self.bad_ids.add(item_id)
        self.last = description
        if self.on_bad_row == "error":
            raise TooManyBadSamplesError(f"bad row (data.on_bad_row=error): {description}")
        if len(self.bad_ids) > self.max_bad_fraction * self.total:
            raise TooManyBadSamplesError(
                f"{len(self.bad_ids)} of {self.total} {self.what} are unusable (more than "
                f"data.max_bad_fraction={self.max_bad_fraction:.2%}); last: {description}"
            )

    def note_dropped(self, rows: list[str]) -> None:
        """Rows dropped when the data was read (reported in :meth:`as_dict`, not counted against the limit)."""
        self.dropped.extend(rows)

    def as_dict(self) -> dict[str, Any]:
        """The skip report of the run summary (``summary.json["data"]["skips"]``)."""
        return {
            "bad_samples": len(self.bad_ids),
            "skip_events": self.skip_events,
            "bad_fraction": len(self.bad_ids) / max(self.total, 1),
            "max_bad_fraction": self.max_bad_fraction,
            "on_bad_row": self.on_bad_row,
            "last_bad": self.last,
            "dropped_at_load": len(self.dropped),
            "dropped_rows": self.dropped[:20],
        }
