"""Prompt sets for ``mmalign evaluate``: shipped sets by name, or a file / folder.

* ``parti`` — PartiPrompts (1632 prompts, 12 categories; ``assets/prompts/PartiPrompts.tsv``, Apache-2.0, see
  ``assets/prompts/README.md``); ``--category-key Challenge`` breaks it down by challenge instead;
* ``toy-heldout`` / ``toy-all`` — the toy world's 108 held-out / 180 captions, category = the shape;
* a ``.txt`` file: one prompt per line (blank lines ignored), no categories;
* a ``.jsonl`` file: one object per line with ``prompt`` (or ``caption``) and optionally the category key;
* a ``.tsv`` / ``.csv`` file with a header row holding ``Prompt`` (any case) and optionally the category column;
* a folder holding the HPDv2 benchmark files ``anime.json``, ``concept-art.json``, ``paintings.json``,
  ``photo.json`` (each a JSON list of prompts, as ``hpsv2.benchmark_prompts`` reads them from the Hugging Face
  dataset ``zhwang/HPDv2``, ``benchmark/``); category = the style.

Bad input is a ``FileNotFoundError`` / ``ValueError`` naming the file (and line, field), raised before any model
loads: a missing file, an empty set, a row without a prompt, an unknown suffix.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from mmalign.shipped_paths import REPO_ROOT

PROMPT_DIR = REPO_ROOT / "assets" / "prompts"
SHIPPED = {"parti": PROMPT_DIR / "PartiPrompts.tsv"}
TOY_SETS = ("toy-heldout", "toy-all")
HPDV2_STYLES = ("anime", "concept-art", "paintings", "photo")
PROMPT_KEYS = ("prompt", "caption")
DEFAULT_CATEGORY_KEY = "category"


@dataclass(frozen=True)
class PromptSet:
    """``prompts[i]`` with ``categories[i]`` (None for a set without categories)."""

    source: str
    prompts: list[str]
    categories: list[str] | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    def head(self, n: int | None) -> PromptSet:
        """The first ``n`` prompts (all when ``n`` is None)."""
        if n is None:
            return self
        if n < 1:
            raise ValueError(f"--max-prompts must be >= 1, got {n}")
        cats = self.categories[:n] if self.categories is not None else None
        return PromptSet(self.source, self.prompts[:n], cats)


def shipped_sets() -> list[str]:
    return [*SHIPPED, *TOY_SETS]


def _checked(source: str, prompts: list[str], categories: list[str] | None) -> PromptSet:
    if not prompts:
        raise ValueError(f"{source}: no prompts")
    return PromptSet(source, prompts, categories if categories and any(c is not None for c in categories) else None)


def _toy(name: str) -> PromptSet:
    from mmalign.toy.captions import all_captions, heldout_captions, parse_caption

    captions = heldout_captions() if name == "toy-heldout" else all_captions()
    return _checked(name, captions, [parse_caption(c).shape for c in captions])


def _txt(path: Path) -> PromptSet:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return _checked(str(path), [line for line in lines if line], None)


def _jsonl(path: Path, category_key: str) -> PromptSet:
    prompts, cats = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}, line {number}: expected an object with a 'prompt' field")
        key = next((k for k in PROMPT_KEYS if k in row), None)
        text = row.get(key) if key else None
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path}, line {number}: field 'prompt' missing or empty")
        prompts.append(text.strip())
        cat = row.get(category_key)
        cats.append(None if cat is None else str(cat))
    return _checked(str(path), prompts, cats)


def _table(path: Path, category_key: str) -> PromptSet:
    delimiter = "\t" if path.suffix == ".tsv" else ","
    with path.open(encoding="utf-8", newline="") as f:  # QUOTE_NONE: PartiPrompts' quotes belong to the prompt
        reader = csv.DictReader(f, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else
                                csv.QUOTE_MINIMAL)
        columns = {c.lower(): c for c in reader.fieldnames or []}
        prompt_col = next((columns[k] for k in PROMPT_KEYS if k in columns), None)
        if prompt_col is None:
            raise ValueError(f"{path}: no 'Prompt' column in the header {reader.fieldnames}")
        cat_col = columns.get(category_key.lower())
        prompts, cats = [], []
        for number, row in enumerate(reader, 2):
            text = (row.get(prompt_col) or "").strip()
            if not text:
                raise ValueError(f"{path}, line {number}: field '{prompt_col}' is empty")
            prompts.append(text)
            cats.append(row.get(cat_col) if cat_col else None)
    return _checked(str(path), prompts, cats)


def _hpdv2(folder: Path) -> PromptSet:
    prompts, cats = [], []
    for style in HPDV2_STYLES:
        path = folder / f"{style}.json"
        try:
            items = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON ({exc.msg})") from None
        if not isinstance(items, list) or not all(isinstance(p, str) and p.strip() for p in items):
            raise ValueError(f"{path}: expected a JSON list of non-empty prompts")
        prompts.extend(p.strip() for p in items)
        cats.extend([style] * len(items))
    return _checked(str(folder), prompts, cats)


def load_prompt_set(value: str, category_key: str = DEFAULT_CATEGORY_KEY) -> PromptSet:
    """The prompt set named or stored at ``value`` (module docstring)."""
    if value in TOY_SETS:
        return _toy(value)
    if value in SHIPPED:
        return _table(SHIPPED[value], "Category" if category_key == DEFAULT_CATEGORY_KEY else category_key)
    path = Path(value)
    if path.is_dir():
        if all((path / f"{s}.json").is_file() for s in HPDV2_STYLES):
            return _hpdv2(path)
        raise ValueError(f"--prompts {path}: a folder must hold the HPDv2 benchmark files "
                         f"{', '.join(s + '.json' for s in HPDV2_STYLES)}")
    if not path.is_file():
        raise FileNotFoundError(f"--prompts {value}: no such file, and not a shipped set ({', '.join(shipped_sets())})")
    if path.suffix == ".txt":
        return _txt(path)
    if path.suffix == ".jsonl":
        return _jsonl(path, category_key)
    if path.suffix in (".tsv", ".csv"):
        return _table(path, category_key)
    raise ValueError(f"--prompts {path}: unknown format '{path.suffix}' (.txt, .jsonl, .tsv, .csv, or a shipped set)")
