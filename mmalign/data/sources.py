"""Tables a preference dataset is read from: parquet files, ``datasets`` datasets, jsonl files.

A source exposes its column names, reads whole *metadata* columns at load time (captions, labels, image
paths) and reads single *image* cells lazily (``read_cell``), so a folder of Pick-a-Pic shards (hundreds
of GB of embedded JPEG bytes) is never held in memory: parquet cells are read one row group at a time
(the last row group read is cached per source, which makes sequential passes such as latent caching
cheap).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mmalign.data.errors import DataFormatError, where

KNOWN_SPLITS = ("train", "validation", "validation_unique", "test", "test_unique")


class ParquetSource:
    """One parquet file."""

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name, self.root, self.by_line = path, name, path.parent, False
        try:
            metadata = pq.read_metadata(path)
            self.column_names = list(pq.read_schema(path).names)
        except Exception as exc:
            raise DataFormatError(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc})") from exc
        self.num_rows = metadata.num_rows
        self._group_starts = []
        start = 0
        for g in range(metadata.num_row_groups):
            self._group_starts.append(start)
            start += metadata.row_group(g).num_rows
        self._file: pq.ParquetFile | None = None
        self._cache: tuple[int, tuple[str, ...], pa.Table] | None = None

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers (spawn) open their own handle
        return {**self.__dict__, "_file": None, "_cache": None}

    def read_columns(self, names: list[str]) -> dict[str, list]:
        table = pq.read_table(self.path, columns=names)
        return {n: table.column(n).to_pylist() for n in names}

    def read_cell(self, row: int, column: str, columns: tuple[str, ...]) -> Any:
        """Value of ``column`` at ``row``; ``columns`` (all image columns) are read together per row group."""
        if self._file is None:
            self._file = pq.ParquetFile(self.path)
        group = _bisect_right(self._group_starts, row) - 1
        if self._cache is None or self._cache[0] != group or self._cache[1] != columns:
            self._cache = (group, columns, self._file.read_row_group(group, columns=list(columns)))
        return self._cache[2].column(column)[row - self._group_starts[group]].as_py()


class HFSource:
    """A ``datasets.Dataset`` (from ``load_from_disk`` or ``load_dataset``).

    Cells are read in the ``arrow`` format, so ``datasets.Image`` features (also inside lists) come back
    undecoded as ``{"bytes", "path"}`` dicts without rewriting the (memory-mapped) dataset.
    """

    def __init__(self, dataset: Any, name: str, root: Path | None) -> None:
        self.dataset, self.name, self.root, self.by_line = dataset, name, root or Path.cwd(), False
        self.column_names = list(dataset.column_names)
        self.num_rows = len(dataset)
        self._last: tuple[int, tuple[str, ...], dict[str, Any]] | None = None

    def read_columns(self, names: list[str]) -> dict[str, list]:
        table = self.dataset.select_columns(names).with_format("arrow")[:]
        return {n: table.column(n).to_pylist() for n in names}

    def read_cell(self, row: int, column: str, columns: tuple[str, ...]) -> Any:
        if self._last is None or self._last[:2] != (row, columns):
            table = self.dataset.select_columns(list(columns)).with_format("arrow")[row]
            self._last = (row, columns, {c: table.column(c)[0].as_py() for c in columns})
        return self._last[2][column]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_last": None}


class RowsSource:
    """Records of a line-based text file (jsonl, csv) held in memory, with their 0-based line numbers."""

    def __init__(self, path: Path, name: str, rows: list[dict[str, Any]], lines: list[int]) -> None:
        self.path, self.name, self.root, self.by_line = path, name, path.parent, True
        self.rows, self.lines = rows, lines
        self.column_names = sorted({k for r in rows for k in r if k is not None})
        self.num_rows = len(rows)

    def row_label(self, row: int) -> int:
        """The 0-based line of record ``row`` (messages print it 1-based: ``line N+1``)."""
        return self.lines[row]

    def read_columns(self, names: list[str]) -> dict[str, list]:
        out: dict[str, list] = {n: [] for n in names}
        for i, record in enumerate(self.rows):
            for n in names:
                if record.get(n, _MISSING) is _MISSING:
                    raise DataFormatError(f"{where(self.name, self.lines[i], n, by_line=True)}: field is missing")
                out[n].append(record[n])
        return out

    def read_cell(self, row: int, column: str, columns: tuple[str, ...]) -> Any:
        return self.rows[row][column]


JsonlSource = RowsSource
"""Former name of :class:`RowsSource` (kept: ``mmalign.data.vlm_rows`` uses it)."""

_MISSING = object()


def jsonl_source(path: Path, name: str) -> RowsSource:
    """A jsonl file, one JSON object per line; blank lines are ignored (line numbers stay true)."""
    rows, lines = [], []
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"{where(name, line_no, by_line=True)}: invalid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise DataFormatError(f"{where(name, line_no, by_line=True)}: expected a JSON object")
            rows.append(obj)
            lines.append(line_no)
    return RowsSource(path, name, rows, lines)


def csv_source(path: Path, name: str) -> RowsSource:
    """A csv file with a header line (Diffusion-KTO's ``file_path, caption, label``); all values are strings;
    a field missing from a short line is reported as missing."""
    rows, lines = [], []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, restval=_MISSING)
        start = 1
        for record in reader:
            if None in record:
                raise DataFormatError(f"{where(name, start, by_line=True)}: more values than header columns")
            rows.append(record)
            lines.append(start)
            start = reader.line_num
    return RowsSource(path, name, rows, lines)


Source = ParquetSource | HFSource | RowsSource


def open_sources(path: str | os.PathLike, split: str | None) -> list[Source]:
    """Resolve ``path`` (parquet folder/file, ``save_to_disk`` folder, jsonl or csv file, hub id) to sources.

    ``split``: for a ``DatasetDict`` folder, a hub id, or a parquet folder whose files are named
    ``<split>-*.parquet`` / live in ``<split>/`` (Pick-a-Pic's layout); ``None`` means ``train`` when such
    splits exist (or the only one), else all files.
    """
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix == ".jsonl":
            return [jsonl_source(p, str(p))]
        if p.suffix == ".csv":
            return [csv_source(p, str(p))]
        if p.suffix == ".parquet":
            return [ParquetSource(p, str(p))]
        raise DataFormatError(f"{p}: unsupported file type (expected .parquet, .jsonl or .csv)")
    if p.is_dir():
        if (p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists() or (p / "state.json").exists():
            return [_from_disk(p, split)]
        parquet = sorted(p.rglob("*.parquet"))
        if parquet:
            return [ParquetSource(f, str(f)) for f in _select_split(p, parquet, split)]
        jsonl = sorted(p.glob("*.jsonl"))
        if len(jsonl) == 1:
            return [jsonl_source(jsonl[0], str(jsonl[0]))]
        raise DataFormatError(
            f"{p}: no parquet files, no datasets.save_to_disk folder and not exactly one .jsonl file found"
        )
    if os.fspath(path).count("/") == 1 and not os.fspath(path).startswith((".", "/")):
        return [_from_hub(os.fspath(path), split)]
    raise FileNotFoundError(f"{path}: no such file or folder (and not a hub id of the form owner/name)")


def _from_disk(p: Path, split: str | None) -> HFSource:
    import datasets

    loaded = datasets.load_from_disk(str(p))
    if isinstance(loaded, datasets.DatasetDict):
        name = split or ("train" if "train" in loaded else (next(iter(loaded)) if len(loaded) == 1 else None))
        if name is None or name not in loaded:
            raise DataFormatError(f"{p}: split {split!r} not found; available splits: {sorted(loaded)}")
        return HFSource(loaded[name], f"{p}[{name}]", p)
    return HFSource(loaded, str(p), p)


def _from_hub(repo_id: str, split: str | None) -> HFSource:
    import datasets

    try:
        loaded = datasets.load_dataset(repo_id, split=split or "train")
    except Exception as exc:
        raise FileNotFoundError(
            f"{repo_id}: not a local path, and loading it from the hub failed ({type(exc).__name__}: {exc})"
        ) from exc
    return HFSource(loaded, f"{repo_id}[{split or 'train'}]", None)


def _split_of(root: Path, file: Path) -> str | None:
    for part in file.relative_to(root).parts[:-1]:
        if part in KNOWN_SPLITS:
            return part
    stem = file.name
    for name in sorted(KNOWN_SPLITS, key=len, reverse=True):
        if stem.startswith((f"{name}-", f"{name}_", f"{name}.")):
            return name
    return None


def _select_split(root: Path, files: list[Path], split: str | None) -> list[Path]:
    by_split: dict[str | None, list[Path]] = {}
    for f in files:
        by_split.setdefault(_split_of(root, f), []).append(f)
    named = sorted(k for k in by_split if k is not None)
    if split is None:
        if not named:
            return files
        split = "train" if "train" in named else (named[0] if len(named) == 1 and None not in by_split else None)
        if split is None:
            raise DataFormatError(f"{root}: several splits {named} found; pass split=")
    chosen = by_split.get(split, [])
    if not chosen:
        raise DataFormatError(f"{root}: no parquet files for split {split!r}; found splits {named or 'none'}")
    return chosen


def _bisect_right(values: list[int], x: int) -> int:
    lo, hi = 0, len(values)
    while lo < hi:
        mid = (lo + hi) // 2
        if x < values[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo
