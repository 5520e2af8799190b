"""Load-time validation: turn source tables into light records (prompt, image references, label/scores).

Schemas (column names exact; ``prompt`` may be called ``caption``, as in Pick-a-Pic):

* **Pick-a-Pic v2 pairs**: ``caption, jpg_0, jpg_1, label_0`` (+ optional ``has_label``, ``are_different``,
  ``caption_0``/``caption_1``, ``model_0``/``model_1``). ``label_0`` must be 0, 0.5 or 1 (else
  :class:`DataFormatError` naming file, row, field). Ties (``label_0 == 0.5``) are removed (official
  Diffusion-DPO: ``label_0 not in (0, 1)`` dropped); rows with ``has_label == False`` or
  ``are_different == False`` are removed when those columns exist (PPD's filter; switchable). ``label_0 == 1``
  → ``jpg_0`` is chosen, ``label_0 == 0`` → ``jpg_1`` is chosen. Dual captions (DCPO, Pick-Double Caption):
  ``caption_0``/``caption_1`` are the captions *of* ``jpg_0``/``jpg_1`` and are swapped together with the
  images (official ``dcpo_trainer.py`` flags ``--caption_0 --caption_1``).
* **explicit pairs** (jsonl, or any table): ``prompt, chosen, rejected`` (+ optional ``prompt_chosen``,
  ``prompt_rejected`` for dual captions).
* **ranked**: ``prompt, images, scores`` — ``scores`` higher = better; items are sorted best first (stable).
* **unpaired**: ``prompt, image, label`` with ``label`` true/1 = desirable, false/0/-1 = undesirable (strings
  too, see ``UNPAIRED_LABELS``; Diffusion-KTO's csv ``file_path, caption, label`` with ``exclusive_win`` /
  ``exclusive_lose`` / ``intersections`` is read as is). A pairs source read with ``kind="unpaired"`` yields two
  items per pair: chosen (desirable), rejected (undesirable).
* ``extra_columns`` (e.g. ``("user_id",)`` for PPD) are read at load and copied into every item unchanged.

Image cells are bytes, ``{"bytes", "path"}`` dicts (``datasets.Image``), or file paths relative to the
source file's folder; they are read lazily, never at load.

Empty prompts (``None`` or whitespace only): ``empty_prompt="skip"`` (default) drops the row and counts it
in ``stats["dropped_empty_prompt"]``; if those drops exceed ``max_bad_fraction`` of the rows read, loading
fails naming the last such row. ``empty_prompt="error"`` fails at the first one. (Empty-prompt *training*,
the official 0.2 caption dropout, is a recipe option, not a data property.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mmalign.data.errors import DataFormatError, where
from mmalign.data.sources import Source

PICKAPIC_COLUMNS = ("jpg_0", "jpg_1", "label_0")
DUAL_CAPTION_COLUMNS = ("caption_0", "caption_1")


@dataclass(frozen=True, slots=True)
class ImageRef:
    """Where one image of a record lives: a table cell (``column``, optional list ``index``)."""

    field: str
    """Name used in messages: ``jpg_0``, ``chosen``, ``images[2]``."""
    column: str
    index: int | None = None


@dataclass(slots=True)
class Record:
    """One dataset item before its images are read."""

    source: int
    row: int
    prompt: str
    images: tuple[ImageRef, ...]
    prompts: tuple[str, str] | None = None
    scores: tuple[float, ...] | None = None
    label: bool | None = None
    suffix: str = ""
    extra: dict[str, Any] | None = None


@dataclass
class LoadStats:
    """Counts of what loading kept and dropped (exposed as ``dataset.stats`` for the run summary)."""

    rows_read: int = 0
    items: int = 0
    dropped_tie: int = 0
    kept_tie: int = 0
    dropped_no_label: int = 0
    dropped_not_different: int = 0
    dropped_not_dreamlike: int = 0
    dropped_empty_prompt: int = 0
    last_empty_prompt: str = ""
    files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "files"} | {"files": len(self.files)}


@dataclass(frozen=True)
class ReadOptions:
    kind: str
    prompt_column: str | None = None
    caption_columns: tuple[str, str] | None = None
    honour_has_label: bool = True
    honour_are_different: bool = True
    dreamlike_pairs_only: bool = False
    empty_prompt: str = "skip"
    extra_columns: tuple[str, ...] = ()
    keep_ties: bool = False
    """Keep Pick-a-Pic rows with ``label_0 == 0.5`` (jpg_0 as ``chosen``, item field ``label_0: 0.5``; evaluation
    only — training objectives need a winner). Kept ties are counted in ``stats.kept_tie``."""


def _extra(source: Source, opts: ReadOptions) -> dict[str, list] | None:
    """Values of ``extra_columns`` (e.g. ``user_id`` for PPD), passed through to the items unchanged."""
    if not opts.extra_columns:
        return None
    _require(source, list(opts.extra_columns), "extra_columns")
    return source.read_columns(list(opts.extra_columns))


def _read_optional(source: Source, names: list[str]) -> dict[str, list]:
    """Columns that may be absent on some jsonl/csv lines (None there)."""
    if source.by_line:
        return {n: [r.get(n) for r in source.rows] for n in names}
    return source.read_columns(names) if names else {}


def _row(extra: dict[str, list] | None, row: int) -> dict[str, Any] | None:
    return {k: v[row] for k, v in extra.items()} if extra is not None else None


def build_records(sources: list[Source], opts: ReadOptions, stats: LoadStats) -> list[Record]:
    records: list[Record] = []
    for index, source in enumerate(sources):
        stats.files.append(source.name)
        stats.rows_read += source.num_rows
        records.extend(_records_of(index, source, opts, stats))
    stats.items = len(records)
    return records


def _require(source: Source, columns: list[str], what: str) -> None:
    for c in columns:
        if c not in source.column_names:
            raise DataFormatError(
                f"{source.name}: missing column '{c}' (needed for {what}: {', '.join(columns)}); "
                f"columns present: {source.column_names}"
            )


def _check_jsonl_images(source: Source, columns: list[str]) -> None:
    """jsonl records are independent objects: every line must carry every image field (names the line)."""
    if source.by_line:
        source.read_columns(columns)


def _prompt_column(source: Source, opts: ReadOptions) -> str:
    if opts.prompt_column:
        _require(source, [opts.prompt_column], "the prompt")
        return opts.prompt_column
    for c in ("prompt", "caption"):
        if c in source.column_names:
            return c
    raise DataFormatError(
        f"{source.name}: missing column 'prompt' (or 'caption'); columns present: {source.column_names}"
    )


def _records_of(index: int, source: Source, opts: ReadOptions, stats: LoadStats) -> list[Record]:
    cols = source.column_names
    if opts.kind in ("pairs", "unpaired"):
        if opts.kind == "unpaired" and ("image" in cols or "file_path" in cols):
            return _unpaired(index, source, opts, stats)
        if "chosen" in cols or "rejected" in cols:
            pairs = _explicit_pairs(index, source, opts, stats)
        elif any(c in cols for c in PICKAPIC_COLUMNS):
            pairs = _pickapic_pairs(index, source, opts, stats)
        else:
            expected = "caption, jpg_0, jpg_1, label_0 (Pick-a-Pic) or prompt, chosen, rejected"
            if opts.kind == "unpaired":
                expected = "prompt, image, label (or a pairs schema: " + expected + ")"
            raise DataFormatError(
                f"{source.name}: missing columns for kind={opts.kind!r}: expected {expected}; "
                f"columns present: {cols}"
            )
        return pairs if opts.kind == "pairs" else _split_pairs(pairs)
    if opts.kind == "ranked":
        return _ranked(index, source, opts, stats)
    raise ValueError(f"kind must be 'pairs', 'ranked' or 'unpaired', got {opts.kind!r}")


def _loc(source: Source, row: int, field_name: str | None = None) -> str:
    display = source.lines[row] if source.by_line else row
    return where(source.name, display, field_name, by_line=source.by_line)


def _text(source: Source, row: int, field_name: str, value: Any, opts: ReadOptions, stats: LoadStats) -> str | None:
    """The prompt text, or None when it is empty and ``empty_prompt == 'skip'`` (counted)."""
    if value is not None and not isinstance(value, str):
        raise DataFormatError(f"{_loc(source, row, field_name)}: expected a string, got {type(value).__name__}")
    if value is None or not value.strip():
        if opts.empty_prompt == "error":
            raise DataFormatError(f"{_loc(source, row, field_name)}: empty prompt")
        stats.dropped_empty_prompt += 1
        stats.last_empty_prompt = _loc(source, row, field_name)
        return None
    return value


def _pickapic_pairs(index: int, source: Source, opts: ReadOptions, stats: LoadStats) -> list[Record]:
    prompt_col = _prompt_column(source, opts)
    _require(source, [prompt_col, *PICKAPIC_COLUMNS], "Pick-a-Pic pairs")
    _check_jsonl_images(source, ["jpg_0", "jpg_1"])
    dual = opts.caption_columns or (DUAL_CAPTION_COLUMNS if all(c in source.column_names for c in DUAL_CAPTION_COLUMNS) else None)
    if dual:
        _require(source, list(dual), "dual captions")
    wanted = [prompt_col, "label_0", *(dual or ())]
    optional = [c for c in ("has_label", "are_different") if c in source.column_names]
    optional = [c for c in optional if (c == "has_label" and opts.honour_has_label) or (c == "are_different" and opts.honour_are_different)]
    optional += ["label_1"] if "label_1" in source.column_names else []  # checked against label_0 when present
    if opts.dreamlike_pairs_only:
        _require(source, ["model_0", "model_1"], "dreamlike_pairs_only")
        wanted += ["model_0", "model_1"]
    table = source.read_columns(wanted) | _read_optional(source, optional)
    extra = _extra(source, opts)
    out = []
    for row in range(source.num_rows):
        if "has_label" in table and table["has_label"][row] is False:
            stats.dropped_no_label += 1
            continue
        if "are_different" in table and table["are_different"][row] is False:
            stats.dropped_not_different += 1
            continue
        if opts.dreamlike_pairs_only and not (
            "dream" in str(table["model_0"][row]) and "dream" in str(table["model_1"][row])
        ):
            stats.dropped_not_dreamlike += 1
            continue
        label = table["label_0"][row]
        if isinstance(label, bool) or not isinstance(label, int | float) or label not in (0, 0.5, 1):
            raise DataFormatError(f"{_loc(source, row, 'label_0')}: label must be 0, 0.5 or 1, got {label!r}")
        if "label_1" in table and table["label_1"][row] is not None and table["label_1"][row] != 1 - label:
            raise DataFormatError(f"{_loc(source, row, 'label_1')}: label_1 must be 1 - label_0 = {1 - label:g} "
                                  f"(label_0 is {label!r}), got {table['label_1'][row]!r}")
        if label == 0.5 and not opts.keep_ties:
            stats.dropped_tie += 1
            continue
        prompt = _text(source, row, prompt_col, table[prompt_col][row], opts, stats)
        if prompt is None:
            continue
        first, second = ("jpg_1", "jpg_0") if label == 0 else ("jpg_0", "jpg_1")
        prompts = None
        if dual:
            c_first, c_second = (dual[1], dual[0]) if label == 0 else (dual[0], dual[1])
            p_w = _text(source, row, c_first, table[c_first][row], opts, stats)
            p_l = _text(source, row, c_second, table[c_second][row], opts, stats) if p_w is not None else None
            if p_w is None or p_l is None:
                continue
            prompts = (p_w, p_l)
        refs = (ImageRef(first, first), ImageRef(second, second))
        fields = _row(extra, row)
        if label == 0.5:
            stats.kept_tie += 1
            fields = {**(fields or {}), "label_0": 0.5}
        out.append(Record(index, row, prompt, refs, prompts, extra=fields))
    return out


def _explicit_pairs(index: int, source: Source, opts: ReadOptions, stats: LoadStats) -> list[Record]:
    prompt_col = _prompt_column_or_dual(source, opts)
    _require(source, ["chosen", "rejected"], "explicit pairs")
    _check_jsonl_images(source, ["chosen", "rejected"])
    dual = all(c in source.column_names for c in ("prompt_chosen", "prompt_rejected"))
    if not dual and prompt_col is None:
        _prompt_column(source, opts)  # raises the missing-prompt error
    wanted = [c for c in ([prompt_col] if prompt_col else []) + (["prompt_chosen", "prompt_rejected"] if dual else [])]
    table = source.read_columns(wanted)
    extra = _extra(source, opts)
    out = []
    for row in range(source.num_rows):
        prompts = None
        if dual:
            p_w = _text(source, row, "prompt_chosen", table["prompt_chosen"][row], opts, stats)
            p_l = _text(source, row, "prompt_rejected", table["prompt_rejected"][row], opts, stats) if p_w else None
            if p_w is None or p_l is None:
                continue
            prompts = (p_w, p_l)
        if prompt_col:
            prompt = _text(source, row, prompt_col, table[prompt_col][row], opts, stats)
            if prompt is None:
                continue
        else:
            prompt = prompts[0]
        refs = (ImageRef("chosen", "chosen"), ImageRef("rejected", "rejected"))
        out.append(Record(index, row, prompt, refs, prompts, extra=_row(extra, row)))
    return out


def _prompt_column_or_dual(source: Source, opts: ReadOptions) -> str | None:
    if opts.prompt_column or any(c in source.column_names for c in ("prompt", "caption")):
        return _prompt_column(source, opts)
    return None


def _split_pairs(pairs: list[Record]) -> list[Record]:
    out = []
    for r in pairs:
        for side, (ref, good) in enumerate(zip(r.images, (True, False))):
            prompt = r.prompts[side] if r.prompts else r.prompt
            suffix = ":" + ("chosen", "rejected")[side]
            out.append(Record(r.source, r.row, prompt, (ref,), label=good, suffix=suffix, extra=r.extra))
    return out


UNPAIRED_LABELS = {
    "true": True, "1": True, "1.0": True, "desirable": True, "exclusive_win": True, "intersections": True,
    "false": False, "0": False, "0.0": False, "-1": False, "-1.0": False, "undesirable": False,
    "exclusive_lose": False,
}
"""String labels (csv files, Diffusion-KTO's processed Pick-a-Pic CSV). ``intersections`` (images that win
some pairs and lose others) counts as desirable: the official default policy ``gt_label_wi_l``."""


def _unpaired_label(source: Source, row: int, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (1, 0, -1):
        return value == 1
    if isinstance(value, str) and value.strip().lower() in UNPAIRED_LABELS:
        return UNPAIRED_LABELS[value.strip().lower()]
    raise DataFormatError(
        f"{_loc(source, row, 'label')}: label must be true/false, 1/0, 1/-1 or one of "
        f"{sorted(UNPAIRED_LABELS)}, got {value!r}"
    )


def _unpaired(index: int, source: Source, opts: ReadOptions, stats: LoadStats) -> list[Record]:
    prompt_col = _prompt_column(source, opts)
    image_col = "image" if "image" in source.column_names else "file_path"
    _require(source, [prompt_col, image_col, "label"], "unpaired data")
    _check_jsonl_images(source, [image_col])
    table = source.read_columns([prompt_col, "label"])
    extra = _extra(source, opts)
    out = []
    for row in range(source.num_rows):
        label = _unpaired_label(source, row, table["label"][row])
        prompt = _text(source, row, prompt_col, table[prompt_col][row], opts, stats)
        if prompt is None:
            continue
        out.append(Record(index, row, prompt, (ImageRef(image_col, image_col),), label=label, extra=_row(extra, row)))
    return out


def _ranked(index: int, source: Source, opts: ReadOptions, stats: LoadStats) -> list[Record]:
    prompt_col = _prompt_column(source, opts)
    _require(source, [prompt_col, "images", "scores"], "ranked data")
    table = source.read_columns([prompt_col, "scores"] + (["images"] if source.by_line else []))
    extra = _extra(source, opts)
    out = []
    for row in range(source.num_rows):
        scores = table["scores"][row]
        if not isinstance(scores, list | tuple) or len(scores) < 2:
            raise DataFormatError(f"{_loc(source, row, 'scores')}: expected a list of at least 2 scores, got {scores!r}")
        for s in scores:
            if isinstance(s, bool) or not isinstance(s, int | float) or not math.isfinite(s):
                raise DataFormatError(f"{_loc(source, row, 'scores')}: scores must be finite numbers, got {s!r}")
        if "images" in table:
            images = table["images"][row]
            if not isinstance(images, list) or len(images) != len(scores):
                n = len(images) if isinstance(images, list) else type(images).__name__
                raise DataFormatError(f"{_loc(source, row, 'images')}: {n} images but {len(scores)} scores")
        prompt = _text(source, row, prompt_col, table[prompt_col][row], opts, stats)
        if prompt is None:
            continue
        order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: equal scores keep file order
        refs = tuple(ImageRef(f"images[{i}]", "images", i) for i in order)
        out.append(Record(index, row, prompt, refs, scores=tuple(float(scores[i]) for i in order), extra=_row(extra, row)))
    return out
