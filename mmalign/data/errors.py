"""Errors and skip records of the preference data readers.

Two kinds of bad input, two treatments (DESIGN.md "Bad input"):

* structural problems found when a dataset is loaded (a missing column, a label outside {0, 0.5, 1}, a
  malformed jsonl line, ranked lists whose lengths disagree) raise :class:`DataFormatError`, whose message
  names the file, the row (0-based; for jsonl/csv files the 1-based line) and the field;
* image problems found when an item is read (corrupt bytes, a missing file, an image smaller than
  ``min_image_size``) never raise: the dataset returns a :class:`BadSample` in place of the item, the
  collate function drops it and carries it to the training process, and :class:`~mmalign.data.skipping.SkipCounter`
  counts it and raises :class:`TooManyBadSamplesError` once the bad fraction passes ``max_bad_fraction``.
"""

from __future__ import annotations

from dataclasses import dataclass


class DataFormatError(ValueError):
    """A structural problem in a preference data file; the message names file, row and field."""


class TooManyBadSamplesError(RuntimeError):
    """More samples were unreadable than ``max_bad_fraction`` allows; the message names the last one."""


def where(
    file: str, row: int | None = None, field: str | None = None, *, by_line: bool = False, jsonl: bool = False
) -> str:
    """``"<file>, row 3, field 'jpg_0'"`` (``row`` 0-based) or, for line-based files (jsonl, csv;
    ``by_line=True``, alias ``jsonl=True``), ``"<file>, line 4, ..."`` (``row`` is then the 0-based line
    index, printed 1-based) — the location string of every message."""
    text = str(file)
    if row is not None:
        text += f", line {row + 1}" if by_line or jsonl else f", row {row}"
    if field is not None:
        text += f", field '{field}'"
    return text


@dataclass(frozen=True)
class BadSample:
    """Stands in for a dataset item whose image could not be used; carries where and why."""

    index: int
    """Index of the item in the dataset."""
    id: str
    """The item id (``"<file>:<row>"``)."""
    file: str
    """Source file (parquet shard, jsonl/csv file, dataset folder) of the row."""
    row: int
    """0-based row of the record in ``file`` (for jsonl/csv files: the 0-based line index)."""
    field: str
    """The image field that failed, e.g. ``jpg_0``, ``chosen`` or ``images[2]``."""
    reason: str
    """What went wrong (decoder message, size, missing file)."""
    by_line: bool = False
    """Whether ``file`` is line-based (jsonl, csv; ``row`` is then printed as a 1-based line)."""

    def describe(self) -> str:
        return f"{where(self.file, self.row, self.field, by_line=self.by_line)}: {self.reason}"
