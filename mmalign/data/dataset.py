"""``PreferenceDataset`` and ``load_preference_data``: validated records, lazily decoded RGB images.

Items (``kind``):

* ``"pairs"``: ``{"id", "prompt", "chosen", "rejected", "chosen_key", "rejected_key"}`` — images are RGB
  ``PIL.Image``; keys are sha1 hex digests of the encoded image bytes (cache keys). Dual-caption data (DCPO)
  adds ``"prompt_chosen"``, ``"prompt_rejected"``.
* ``"ranked"``: ``{"id", "prompt", "images", "image_keys", "scores"}`` sorted **best first** (descending
  score, stable for ties).
* ``"unpaired"``: ``{"id", "prompt", "image", "image_key", "label"}`` (``label`` True = desirable).

``id`` is ``"<file>:<row>"`` (``:chosen`` / ``:rejected`` appended when pairs are split into unpaired items).

Bad images (corrupt bytes, missing file, smaller than ``min_image_size``) never raise from ``__getitem__``:

* ``bad_image="replace"`` (default): the item is replaced by the next readable item (wrapping around) and the
  returned item carries ``"skipped": [BadSample, ...]`` (empty list when nothing was skipped), so batch sizes
  stay constant (no empty micro-batches, DDP-safe); the neighbour appears twice in that epoch.
* ``bad_image="drop"``: ``__getitem__`` returns the :class:`BadSample`; :func:`collate_skipping` removes it.

Either way :func:`collate_skipping` gathers the skips into ``batch["skipped"]`` and a
:class:`SkipCounter` in the training process counts them (``update(batch)``) and raises once the number of
distinct bad items exceeds ``max_bad_fraction`` of the dataset. Alternatively :meth:`PreferenceDataset.scan`
reads everything up front (e.g. while building the latent cache) and :meth:`PreferenceDataset.without`
drops what it found.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset
from tqdm.auto import tqdm

from mmalign.data.errors import BadSample, DataFormatError, TooManyBadSamplesError, where
from mmalign.data.images import DEFAULT_MIN_IMAGE_SIZE, BadImageError, decode_image, image_key
from mmalign.data.paths import DataPathError, read_regular_file, resolve_inside
from mmalign.data.records import LoadStats, ReadOptions, Record, build_records
from mmalign.data.sources import Source, open_sources

KINDS = ("pairs", "ranked", "unpaired")


class PreferenceDataset(Dataset):
    """Preference records from one or more sources; see the module docstring for the item contract."""

    def __init__(
        self,
        sources: list[Source],
        records: list[Record],
        kind: str,
        stats: LoadStats,
        *,
        min_image_size: int = DEFAULT_MIN_IMAGE_SIZE,
        max_bad_fraction: float = 0.01,
        bad_image: str = "replace",
        allow_outside_paths: bool = False,
    ) -> None:
        if bad_image not in ("replace", "drop"):
            raise ValueError(f"bad_image must be 'replace' or 'drop', got {bad_image!r}")
        self.sources, self.records, self.kind, self.stats = sources, records, kind, stats
        self.min_image_size, self.max_bad_fraction, self.bad_image = min_image_size, max_bad_fraction, bad_image
        self.is_dual = kind == "pairs" and any(r.prompts is not None for r in records)
        self.allow_outside_paths = allow_outside_paths

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any] | BadSample:
        result = self.read(index)
        if self.bad_image == "drop" or not isinstance(result, BadSample):
            if not isinstance(result, BadSample):
                result["skipped"] = []
            return result
        skipped = [result]
        for step in range(1, len(self)):
            result = self.read((index + step) % len(self))
            if not isinstance(result, BadSample):
                result["skipped"] = skipped
                return result
            skipped.append(result)
        raise TooManyBadSamplesError(f"no readable item in the dataset; last: {skipped[-1].describe()}")

    def item_id(self, index: int) -> str:
        """``"<file>:<row>"`` (for jsonl files the 0-based line index), plus ``:chosen``/``:rejected``
        for pairs split into unpaired items."""
        r = self.records[index]
        source = self.sources[r.source]
        return f"{source.name}:{source.lines[r.row] if source.by_line else r.row}{r.suffix}"

    def image_keys(self, index: int) -> list[str] | BadSample:
        """Content keys of the item's images in item order (chosen, rejected / best first) without decoding
        them — lets a latent cache skip decoding what it already holds. Unreadable bytes → BadSample."""
        record = self.records[index]
        keys = []
        for ref in record.images:
            try:
                keys.append(image_key(self._image_bytes(record, ref)))
            except BadImageError as exc:
                return self._bad(index, ref, exc)
        return keys

    def _bad(self, index: int, ref, exc: Exception) -> BadSample:
        source = self.sources[self.records[index].source]
        record = self.records[index]
        row = source.lines[record.row] if source.by_line else record.row
        return BadSample(index, self.item_id(index), source.name, row, ref.field, str(exc), source.by_line)

    def read(self, index: int) -> dict[str, Any] | BadSample:
        """The item at ``index`` or a :class:`BadSample` saying which image failed and why."""
        record = self.records[index]
        images, keys = [], []
        for ref in record.images:
            try:
                data = self._image_bytes(record, ref)
                images.append(decode_image(data, min_image_size=self.min_image_size))
            except BadImageError as exc:
                return self._bad(index, ref, exc)
            keys.append(image_key(data))
        item: dict[str, Any] = {"id": self.item_id(index), "prompt": record.prompt}
        if self.kind == "pairs":
            item.update(chosen=images[0], rejected=images[1], chosen_key=keys[0], rejected_key=keys[1])
            if record.prompts is not None:
                item.update(prompt_chosen=record.prompts[0], prompt_rejected=record.prompts[1])
        elif self.kind == "ranked":
            item.update(images=images, image_keys=keys, scores=list(record.scores))
        else:
            item.update(image=images[0], image_key=keys[0], label=record.label)
        if record.extra:
            item.update(record.extra)
        return item

    def _image_bytes(self, record: Record, ref) -> bytes:
        source = self.sources[record.source]
        columns = tuple(sorted({r.column for r in record.images}))
        value = source.read_cell(record.row, ref.column, columns)
        if ref.index is not None:
            if not isinstance(value, list | tuple) or ref.index >= len(value):
                n = len(value) if isinstance(value, list | tuple) else type(value).__name__
                raise BadImageError(f"'{ref.column}' has {n} entries but the record has {len(record.scores)} scores")
            value = value[ref.index]
        return _resolve_bytes(value, source.root, self.allow_outside_paths)

    def check_paths(self) -> None:
        """Load-time check of jsonl/csv rows (held in memory): every file path stays inside the data set's folder
        (:mod:`mmalign.data.paths`); a :class:`DataFormatError` names file, line and field."""
        for record in self.records:
            source = self.sources[record.source]
            if not source.by_line:
                continue  # parquet / HF datasets: checked when read (values are mostly bytes)
            columns = tuple(sorted({r.column for r in record.images}))
            for ref in record.images:
                value = source.read_cell(record.row, ref.column, columns)
                values = value if isinstance(value, list | tuple) else [value]
                for v in values:
                    v = v.get("path") if isinstance(v, dict) and not v.get("bytes") else v
                    if isinstance(v, str) and v:
                        try:
                            resolve_inside(v, source.root, self.allow_outside_paths)
                        except DataPathError as exc:
                            raise DataFormatError(
                                f"{where(source.name, source.lines[record.row], ref.field, by_line=True)}: {exc}"
                            ) from None

    def scan(self, progress: bool = True) -> ScanReport:
        """Read and decode every item once; return the bad ones (use with :meth:`without`)."""
        bad = []
        for i in tqdm(range(len(self)), desc="scan images", disable=not progress):
            result = self.read(i)
            if isinstance(result, BadSample):
                bad.append(result)
        return ScanReport(len(self), bad)

    def without(self, bad: Iterable[BadSample | int]) -> PreferenceDataset:
        """A dataset without the given items (indices or BadSamples from :meth:`scan`)."""
        drop = {b.index if isinstance(b, BadSample) else int(b) for b in bad}
        records = [r for i, r in enumerate(self.records) if i not in drop]
        return PreferenceDataset(
            self.sources, records, self.kind, self.stats, min_image_size=self.min_image_size,
            max_bad_fraction=self.max_bad_fraction, bad_image=self.bad_image,
            allow_outside_paths=self.allow_outside_paths,
        )

    def summary(self) -> dict[str, Any]:
        """Load counts for the run summary (``kind``, ``items``, ``rows_read``, dropped_* counts)."""
        return {"kind": self.kind, "dual_captions": self.is_dual, **self.stats.as_dict(), "items": len(self)}


@dataclass
class ScanReport:
    total: int
    bad: list[BadSample]

    @property
    def bad_fraction(self) -> float:
        return len(self.bad) / max(self.total, 1)

    def check(self, max_bad_fraction: float) -> None:
        """Raise :class:`TooManyBadSamplesError` when more than ``max_bad_fraction`` of the items are bad."""
        if self.bad and self.bad_fraction > max_bad_fraction:
            raise TooManyBadSamplesError(
                f"{len(self.bad)} of {self.total} items have unusable images ({self.bad_fraction:.2%} > "
                f"max_bad_fraction={max_bad_fraction:.2%}); last: {self.bad[-1].describe()}"
            )

    def as_dict(self) -> dict[str, Any]:
        return {"scanned": self.total, "bad_samples": len(self.bad), "bad_fraction": self.bad_fraction,
                "last_bad": self.bad[-1].describe() if self.bad else None}


def _resolve_bytes(value: Any, root: Path, allow_outside: bool = False) -> bytes:
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        value = value.get("path")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str) and value:
        try:
            return read_regular_file(resolve_inside(value, root, allow_outside))
        except DataPathError as exc:
            raise BadImageError(f"cannot read image file: {exc}") from exc
    raise BadImageError(f"no image (got {type(value).__name__})")


def load_preference_data(
    path: str | os.PathLike,
    kind: str = "pairs",
    *,
    split: str | None = None,
    max_bad_fraction: float = 0.01,
    min_image_size: int = DEFAULT_MIN_IMAGE_SIZE,
    bad_image: str = "replace",
    prompt_column: str | None = None,
    caption_columns: tuple[str, str] | None = None,
    honour_has_label: bool = True,
    honour_are_different: bool = True,
    dreamlike_pairs_only: bool = False,
    empty_prompt: str = "skip",
    max_items: int | None = None,
    extra_columns: tuple[str, ...] | list[str] = (),
    allow_outside_paths: bool = False,
    keep_ties: bool = False,
) -> PreferenceDataset:
    """Load preference data for text-to-image training (schemas: :mod:`mmalign.data.records`).

    Args:
        path: a folder of parquet shards (Pick-a-Pic layout ``<split>-*.parquet`` or ``<split>/``), one
            parquet file, a ``datasets.save_to_disk`` folder, a ``.jsonl`` or ``.csv`` file (image paths relative
            to it), a folder holding exactly one ``.jsonl``, or a hub id ``owner/name``
            (``datasets.load_dataset``; online only).
        kind: ``"pairs"``, ``"ranked"`` or ``"unpaired"`` (item contracts in :mod:`mmalign.data.dataset`).
        split: split of a ``DatasetDict`` / hub dataset / split-named parquet folder; default ``train``.
        max_bad_fraction: largest tolerated fraction of items with unusable images (and of rows with empty
            prompts dropped at load) before a :class:`TooManyBadSamplesError` / :class:`DataFormatError`.
        min_image_size: smallest accepted image side in pixels; smaller images are counted skips.
        bad_image: ``"replace"`` or ``"drop"`` — what ``__getitem__`` does with an unusable item.
        prompt_column: prompt column name (default: ``prompt``, else ``caption``).
        caption_columns: per-image caption columns of Pick-a-Pic-schema dual-caption data (default:
            ``("caption_0", "caption_1")`` when both exist).
        honour_has_label / honour_are_different: drop Pick-a-Pic rows where these columns are False.
        dreamlike_pairs_only: keep only pairs whose ``model_0`` and ``model_1`` contain "dream" (official option).
        empty_prompt: ``"skip"`` (counted) or ``"error"``.
        max_items: keep only the first N items (after filtering), e.g. DCPO's 20k subset.
        extra_columns: columns copied unchanged into every item (e.g. ``("user_id",)`` for PPD); a missing one
            is a :class:`DataFormatError`.
        allow_outside_paths: read image paths that resolve outside the data set's folder (absolute paths,
            ``../`` traversals, symlinks out of it); by default they are a :class:`DataFormatError` naming the
            line (jsonl/csv) or a counted bad sample (other sources). Only regular files are read.
        keep_ties: keep Pick-a-Pic ground-truth ties (``label_0 == 0.5``) as pairs whose item carries
            ``label_0: 0.5`` (for evaluation, e.g. ``mmalign eval-scorer``); by default they are dropped and counted.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if empty_prompt not in ("skip", "error"):
        raise ValueError(f"empty_prompt must be 'skip' or 'error', got {empty_prompt!r}")
    sources = open_sources(path, split)
    opts = ReadOptions(kind, prompt_column, tuple(caption_columns) if caption_columns else None,
                       honour_has_label, honour_are_different, dreamlike_pairs_only, empty_prompt,
                       tuple(extra_columns), keep_ties)
    stats = LoadStats()
    records = build_records(sources, opts, stats)
    if stats.dropped_empty_prompt and stats.dropped_empty_prompt > max_bad_fraction * max(stats.rows_read, 1):
        raise DataFormatError(
            f"{stats.dropped_empty_prompt} of {stats.rows_read} rows have an empty prompt (more than "
            f"max_bad_fraction={max_bad_fraction:.2%}); last: {stats.last_empty_prompt}"
        )
    if max_items is not None:
        records = records[:max_items]
    if not records:
        raise DataFormatError(f"{path}: no usable {kind} items after filtering ({stats.as_dict()})")
    dataset = PreferenceDataset(sources, records, kind, stats, min_image_size=min_image_size,
                                max_bad_fraction=max_bad_fraction, bad_image=bad_image,
                                allow_outside_paths=allow_outside_paths)
    dataset.check_paths()
    return dataset
