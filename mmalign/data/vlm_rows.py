"""TRL-style vision preference rows (images, prompt, chosen, rejected) from jsonl / parquet / ``datasets``.

Row schema (TRL ``DPOTrainer`` vision datasets, e.g. ``HuggingFaceH4/rlaif-v_formatted``):

* ``images`` (list) or ``image`` (one): a path (relative paths resolve against ``image_root``, default the
  data file's folder), a ``datasets`` Image cell (``{"bytes": ..., "path": ...}``) or raw bytes;
* ``prompt``, ``chosen``, ``rejected``: plain strings, or conversational message lists
  (``[{"role": "user", "content": "..."}]`` / ``[{"role": "assistant", "content": "..."}]``);
* optional ``id``; for mDPO / rDPO an extra image field (``corrupted_image`` / ``retrieved_image``,
  configurable); for MM-RLHF dynamic beta ``chosen_reward`` + ``rejected_reward`` or ``ls_factor``.

Bad input (DESIGN.md "Bad input"): structural problems — a missing field, an empty completion, a
missing image file — are found when the dataset is built and either raise :class:`DataFormatError` naming
file, row and field (``on_bad_row="error"``) or drop the row and count it (``"skip"``, see ``skipped``).
An image that exists but cannot be decoded is found when the item is read: ``__getitem__`` returns a
:class:`BadSample`, the collator drops it and the recipe counts it against ``max_bad_fraction``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from mmalign.data.errors import BadSample, DataFormatError, where
from mmalign.data.images import BadImageError, decode_image
from mmalign.data.paths import DataPathError, read_regular_file, resolve_inside
from mmalign.data.sources import RowsSource, open_sources

TEXT_FIELDS = ("prompt", "chosen", "rejected")
REWARD_FIELDS = ("chosen_reward", "rejected_reward", "ls_factor")


@dataclass
class VLMRow:
    """One preference example, images decoded to RGB PIL images."""

    id: str
    images: list[Image.Image]
    prompt: str | list[dict[str, Any]]
    chosen: str | list[dict[str, Any]]
    rejected: str | list[dict[str, Any]]
    extra_image: Image.Image | None = None
    """The mDPO corrupted / rDPO retrieved image (``None`` when the method makes it on the fly)."""
    rewards: dict[str, float] = field(default_factory=dict)
    """Optional reward-model fields (``chosen_reward``, ``rejected_reward``, ``ls_factor``)."""


@dataclass
class _RowRef:
    source: Any
    row: int
    text: dict[str, Any]
    image_refs: list[tuple[str, Any]]
    extra_ref: tuple[str, Any] | None
    rewards: dict[str, float]


def completion_text(value: Any) -> str:
    """The text of a completion: the string itself, or the concatenated content of its messages."""
    if isinstance(value, str):
        return value
    parts: list[str] = []
    for message in value or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
    return "".join(parts)


class VLMPreferenceDataset(Dataset):
    """Vision preference pairs read from ``path`` (jsonl file, parquet file/folder, ``save_to_disk`` folder, hub id).

    Args:
        path, split: where the rows are (see :func:`mmalign.data.sources.open_sources`).
        image_root: folder that relative image paths resolve against (default: the data file's folder).
        extra_image_field: name of the per-row corrupted / retrieved image column, or ``None``.
        require_extra_image: a row without ``extra_image_field`` is a bad row (rDPO needs it; mDPO can crop).
        on_bad_row: ``"error"`` raises on the first structural problem; ``"skip"`` drops and counts it.
        max_rows: keep only the first N rows (after validation), for smoke runs.
        min_image_size: smallest accepted image side in pixels.
        allow_outside_paths: read image paths that resolve outside the image root (absolute, ``../``, symlinks
            out of it); by default such a row is a bad row (:mod:`mmalign.data.paths`).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        split: str | None = None,
        image_root: str | os.PathLike | None = None,
        extra_image_field: str | None = None,
        require_extra_image: bool = False,
        on_bad_row: str = "error",
        max_rows: int | None = None,
        min_image_size: int = 8,
        allow_outside_paths: bool = False,
    ) -> None:
        if on_bad_row not in ("error", "skip"):
            raise ValueError(f"data.on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
        self.image_root = Path(image_root).expanduser() if image_root else None
        self.min_image_size = min_image_size
        self.allow_outside_paths = allow_outside_paths
        self.on_bad_row = on_bad_row
        self.skipped: list[str] = []
        """One message per row dropped at load time (file, row, field, reason)."""
        self.rows: list[_RowRef] = []
        for source in open_sources(path, split):
            self._read_source(source, extra_image_field, require_extra_image)
        if max_rows is not None:
            self.rows = self.rows[:max_rows]
        if not self.rows:
            raise DataFormatError(f"{path}: no usable rows ({len(self.skipped)} skipped: {self.skipped[:3]})")

    # -- loading ---------------------------------------------------------------------------------------
    def _read_source(self, source: Any, extra_field: str | None, require_extra: bool) -> None:
        names = set(source.column_names)
        image_field = "images" if "images" in names else ("image" if "image" in names else None)
        for name in TEXT_FIELDS:
            if name not in names:
                raise DataFormatError(f"{where(source.name, field=name)}: column is missing (have {sorted(names)})")
        if image_field is None:
            raise DataFormatError(f"{where(source.name, field='images')}: no 'images' or 'image' column")
        if require_extra and (extra_field is None or extra_field not in names):
            raise DataFormatError(f"{where(source.name, field=extra_field)}: column is missing (the method needs it)")
        text = {n: _column(source, n) for n in TEXT_FIELDS + ("id",) + REWARD_FIELDS if n in names}
        for row in range(source.num_rows):
            label = source.row_label(row) if isinstance(source, RowsSource) else row
            try:
                self.rows.append(self._check_row(source, row, label, text, image_field, extra_field, require_extra))
            except DataFormatError as exc:
                if self.on_bad_row == "error":
                    raise
                self.skipped.append(str(exc))

    def _check_row(self, source, row, label, text, image_field, extra_field, require_extra) -> _RowRef:
        jsonl = isinstance(source, RowsSource)
        values = {n: text[n][row] for n in TEXT_FIELDS}
        if not isinstance(values["prompt"], str | list) or not values["prompt"]:
            raise DataFormatError(f"{where(source.name, label, 'prompt', by_line=jsonl)}: prompt is missing or empty")
        for name in ("chosen", "rejected"):
            if not completion_text(values[name]).strip():
                raise DataFormatError(f"{where(source.name, label, name, by_line=jsonl)}: empty completion")
        cell = source.read_cell(row, image_field, (image_field,))
        cells = list(cell) if isinstance(cell, list | tuple) else [cell]
        if not cells or any(c is None for c in cells):
            raise DataFormatError(f"{where(source.name, label, image_field, by_line=jsonl)}: no image")
        refs = [(f"{image_field}[{i}]" if len(cells) > 1 else image_field, c) for i, c in enumerate(cells)]
        extra = None
        if extra_field is not None and extra_field in source.column_names:
            value = source.read_cell(row, extra_field, (extra_field,)) if not jsonl else source.rows[row].get(extra_field)
            extra = (extra_field, value) if value is not None else None
        if require_extra and extra is None:
            raise DataFormatError(f"{where(source.name, label, extra_field, by_line=jsonl)}: no image")
        for name, ref in refs + ([extra] if extra else []):
            self._check_path(source, label, name, ref, jsonl)
        rewards = {k: float(text[k][row]) for k in REWARD_FIELDS if k in text and text[k][row] is not None}
        values["id"] = str(text["id"][row]) if "id" in text and text["id"][row] is not None else f"{source.name}:{label}"
        return _RowRef(source, label, values, refs, extra, rewards)

    def _check_path(self, source, label, name, ref, jsonl) -> None:
        try:
            path = self._path_of(source, ref)
        except DataPathError as exc:
            raise DataFormatError(f"{where(source.name, label, name, by_line=jsonl)}: {exc}") from None
        if path is not None and not path.is_file():
            raise DataFormatError(f"{where(source.name, label, name, by_line=jsonl)}: image file not found: {path}")

    def _path_of(self, source: Any, ref: Any) -> Path | None:
        if isinstance(ref, dict):
            if ref.get("bytes"):
                return None
            ref = ref.get("path")
        if isinstance(ref, str | os.PathLike):
            return resolve_inside(ref, self.image_root or Path(source.root), self.allow_outside_paths)
        return None

    # -- reading ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows)

    def _load(self, ref_row: _RowRef, name: str, ref: Any) -> Image.Image:
        if isinstance(ref, Image.Image):
            return ref.convert("RGB")
        path = self._path_of(ref_row.source, ref)
        data = ref.get("bytes") if isinstance(ref, dict) else ref
        if path is not None:
            data = read_regular_file(path)
        return decode_image(data, min_image_size=self.min_image_size)

    def __getitem__(self, index: int) -> VLMRow | BadSample:
        r = self.rows[index]
        jsonl = isinstance(r.source, RowsSource)
        images, extra = [], None
        for name, ref in r.image_refs + ([r.extra_ref] if r.extra_ref else []):
            try:
                image = self._load(r, name, ref)
            except (BadImageError, DataPathError, OSError) as exc:
                return BadSample(index, r.text["id"], str(r.source.name), r.row, name,
                                 f"{exc} ({where(r.source.name, r.row, name, by_line=jsonl)})")
            if r.extra_ref is not None and name == r.extra_ref[0]:
                extra = image
            else:
                images.append(image)
        return VLMRow(r.text["id"], images, r.text["prompt"], r.text["chosen"], r.text["rejected"], extra,
                      dict(r.rewards))


def _column(source: Any, name: str) -> list[Any]:
    if isinstance(source, RowsSource):  # optional fields may be absent on some lines
        return [record.get(name) for record in source.rows]
    return source.read_columns([name])[name]


def split_bad(items: Sequence[Any]) -> tuple[list[VLMRow], list[BadSample]]:
    """Separate decoded rows from :class:`BadSample` stand-ins (used by the collator)."""
    good = [x for x in items if not isinstance(x, BadSample)]
    bad = [x for x in items if isinstance(x, BadSample)]
    return good, bad
