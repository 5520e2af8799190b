"""Writers for the formats :func:`load_preference_data` reads (toy data, scorer-labelled data, tests)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mmalign.data.images import encode_image, image_key

_PICKAPIC_OPTIONAL = {
    "has_label": pa.bool_(), "are_different": pa.bool_(), "caption_0": pa.string(), "caption_1": pa.string(),
    "model_0": pa.string(), "model_1": pa.string(), "user_id": pa.int64(), "ranking_id": pa.int64(),
    "best_image_uid": pa.string(), "image_0_uid": pa.string(), "image_1_uid": pa.string(),
    "ps_score_0": pa.float64(), "ps_score_1": pa.float64(), "ps_label_0": pa.float64(),
}


def write_pickapic_parquet(
    rows: Iterable[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    image_format: str = "PNG",
    row_group_size: int = 64,
) -> Path:
    """Write rows in the Pick-a-Pic v2 schema to one parquet file.

    Each row needs ``caption``, ``jpg_0``, ``jpg_1`` (PIL image, bytes, or path) and ``label_0`` (0, 0.5, 1);
    ``label_1 = 1 - label_0`` is added, image uids default to the sha1 content keys; optional columns kept
    when given: ``has_label``, ``are_different``, ``caption_0``/``caption_1`` (dual captions), ``model_0``/
    ``model_1``, ``user_id``, ``ranking_id``, ``ps_score_0``/``ps_score_1``/``ps_label_0``. PIL images are
    encoded as ``image_format`` (PNG, lossless, by default; real Pick-a-Pic holds JPEG) — the column names
    stay ``jpg_*`` as in the original. Values are written as given (no validation), so tests can write bad data.
    """
    columns: dict[str, list] = {k: [] for k in ("caption", "jpg_0", "jpg_1", "label_0", "label_1",
                                                 "image_0_uid", "image_1_uid")}
    optional: dict[str, list] = {}
    rows = list(rows)
    for i, row in enumerate(rows):
        img0, img1 = encode_image(row["jpg_0"], image_format), encode_image(row["jpg_1"], image_format)
        label = row["label_0"]
        columns["caption"].append(row["caption"])
        columns["jpg_0"].append(img0)
        columns["jpg_1"].append(img1)
        columns["label_0"].append(label)
        columns["label_1"].append(1 - label if isinstance(label, int | float) and not isinstance(label, bool) else None)
        columns["image_0_uid"].append(row.get("image_0_uid", image_key(img0)))
        columns["image_1_uid"].append(row.get("image_1_uid", image_key(img1)))
        for key in _PICKAPIC_OPTIONAL:
            if key in row:
                optional.setdefault(key, [None] * i)
        for key, values in optional.items():
            values.append(row.get(key))
    label_type = pa.float64() if all(isinstance(v, int | float) or v is None for v in columns["label_0"]) else None
    schema_fields = [
        ("caption", pa.string()), ("jpg_0", pa.binary()), ("jpg_1", pa.binary()), ("label_0", label_type),
        ("label_1", pa.float64()), ("image_0_uid", pa.string()), ("image_1_uid", pa.string()),
    ] + [(k, _PICKAPIC_OPTIONAL[k]) for k in optional]
    arrays = {name: pa.array(columns.get(name, optional.get(name)), type=t) for name, t in schema_fields}
    table = pa.table(arrays)
    return _write_parquet(table, path, row_group_size)


def write_parquet_rows(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike, *, image_columns: tuple[str, ...] = (),
                       image_format: str = "PNG", row_group_size: int = 64) -> Path:
    """Write arbitrary rows (e.g. ``prompt, chosen, rejected`` or ``prompt, images, scores``) to parquet;
    values of ``image_columns`` (images or lists of images) are encoded to bytes."""
    out = []
    for row in rows:
        row = dict(row)
        for c in image_columns:
            v = row[c]
            row[c] = [encode_image(x, image_format) for x in v] if isinstance(v, list | tuple) else encode_image(v, image_format)
        out.append(row)
    return _write_parquet(pa.Table.from_pylist(out), path, row_group_size)


def _write_parquet(table: pa.Table, path: str | os.PathLike, row_group_size: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, row_group_size=row_group_size)
    os.replace(tmp, path)
    return path


def _save_image(image: Any, image_dir: Path, root: Path, image_format: str) -> str:
    """Write an image under ``image_dir`` named by its content key; return its path relative to ``root``."""
    data = encode_image(image, image_format)
    suffix = ".jpg" if image_format.upper() in ("JPEG", "JPG") else f".{image_format.lower()}"
    if isinstance(image, str | os.PathLike):
        suffix = Path(image).suffix or suffix
    target = image_dir / f"{image_key(data)}{suffix}"
    if not target.exists():
        target.write_bytes(data)
    return os.path.relpath(target, root)


def _write_jsonl(records: list[dict[str, Any]], path: Path) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def _prepare(path: str | os.PathLike, image_dir: str | os.PathLike | None) -> tuple[Path, Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(image_dir) if image_dir is not None else path.parent / "images"
    if not folder.is_absolute():
        folder = path.parent / folder
    folder.mkdir(parents=True, exist_ok=True)
    return path, folder


def write_ranked_jsonl(
    rows: Iterable[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    image_dir: str | os.PathLike | None = None,
    image_format: str = "PNG",
) -> Path:
    """Write ranked rows ``{"prompt", "images": [PIL|bytes|path], "scores": [float]}`` as jsonl.

    Images go to ``image_dir`` (default ``<path's folder>/images``, relative paths resolved against the
    jsonl's folder) named by content key; the jsonl stores paths relative to its folder. Scores are written
    in the given order (the reader sorts best first). Extra keys in a row are kept.
    """
    path, folder = _prepare(path, image_dir)
    records = []
    for row in rows:
        record = dict(row)
        record["images"] = [_save_image(im, folder, path.parent, image_format) for im in row["images"]]
        record["scores"] = [float(s) for s in row["scores"]]
        records.append(record)
    return _write_jsonl(records, path)


def write_pairs_jsonl(
    rows: Iterable[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    image_dir: str | os.PathLike | None = None,
    image_format: str = "PNG",
) -> Path:
    """Write pairs ``{"prompt", "chosen", "rejected"}`` (+ optional ``prompt_chosen``/``prompt_rejected``)
    as jsonl with image files, like :func:`write_ranked_jsonl`."""
    path, folder = _prepare(path, image_dir)
    records = []
    for row in rows:
        record = dict(row)
        for k in ("chosen", "rejected"):
            record[k] = _save_image(row[k], folder, path.parent, image_format)
        records.append(record)
    return _write_jsonl(records, path)


def write_unpaired_jsonl(
    rows: Iterable[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    image_dir: str | os.PathLike | None = None,
    image_format: str = "PNG",
) -> Path:
    """Write unpaired rows ``{"prompt", "image", "label": bool}`` as jsonl with image files."""
    path, folder = _prepare(path, image_dir)
    records = []
    for row in rows:
        record = dict(row)
        record["image"] = _save_image(row["image"], folder, path.parent, image_format)
        records.append(record)
    return _write_jsonl(records, path)
