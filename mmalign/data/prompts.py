"""Data kind ``prompts``: the prompt sets online methods (GRPO, online Diffusion-DPO) sample from.

Formats (flow_grpo's ``dataset/<name>/{train,test}.txt``; ddpo-pytorch's prompt files):

* ``.txt`` — one prompt per line; blank lines and lines starting with ``#`` are skipped;
* ``.jsonl`` — one object per line with a ``prompt`` field (a string; extra fields are kept as metadata, e.g.
  flow_grpo's GenEval ``metadata.jsonl``), blank lines skipped;
* a folder holding ``train.txt`` / ``train.jsonl`` (and optionally ``test.*``): flow_grpo's layout.

The split: the folder's ``test`` file when there is one, else the last ``test_fraction`` of the prompts (at least
one when ``test_fraction > 0``) in file order. Every structural problem is a :class:`DataFormatError` naming the
file and the 1-based line (and the field for jsonl).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmalign.data.errors import DataFormatError, where

PROMPT_SUFFIXES = (".txt", ".jsonl")


@dataclass
class PromptSet:
    """Prompts of one split, with the file and 1-based line each came from (for messages) and jsonl metadata."""

    prompts: list[str]
    sources: list[str] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"index": index, "prompt": self.prompts[index]}

    def summary(self) -> dict[str, Any]:
        return {"kind": "prompts", "prompts": len(self.prompts)}


def read_prompt_file(path: str | os.PathLike) -> PromptSet:
    """The prompts of one ``.txt`` / ``.jsonl`` file (module docstring); DataFormatError naming file and line."""
    path = Path(path)
    if path.suffix not in PROMPT_SUFFIXES:
        raise DataFormatError(f"{path}: prompt files are .txt (one per line) or .jsonl (a 'prompt' field per line)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 text ({exc})") from None
    out = PromptSet([])
    for i, line in enumerate(lines):
        text = line.strip()
        if not text or (path.suffix == ".txt" and text.startswith("#")):
            continue
        prompt, meta = (text, {}) if path.suffix == ".txt" else _jsonl_prompt(text, str(path), i)
        out.prompts.append(prompt)
        out.sources.append(where(str(path), i, by_line=True))
        out.metadata.append(meta)
    if not out.prompts:
        raise DataFormatError(f"{path}: no prompts")
    return out


def _jsonl_prompt(text: str, file: str, line: int) -> tuple[str, dict[str, Any]]:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{where(file, line, by_line=True)}: not valid JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise DataFormatError(f"{where(file, line, by_line=True)}: a JSON object with a 'prompt' field expected")
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        got = "missing" if prompt is None else repr(prompt)[:40]
        raise DataFormatError(f"{where(file, line, 'prompt', by_line=True)}: a non-empty string expected ({got})")
    return prompt.strip(), {k: v for k, v in row.items() if k != "prompt"}


def load_prompts(path: str | os.PathLike, split: str = "train", test_fraction: float = 0.0,
                 max_items: int | None = None) -> PromptSet:
    """The ``split`` (train | test) of the prompt data at ``path`` (module docstring)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    path = Path(path)
    if path.is_dir():
        files = {s: next((path / f"{s}{x}" for x in PROMPT_SUFFIXES if (path / f"{s}{x}").is_file()), None)
                 for s in ("train", "test")}
        if files["train"] is None:
            raise DataFormatError(f"{path}: a prompt folder holds train.txt or train.jsonl (and optionally test.*)")
        if files["test"] is not None:
            return _limit(read_prompt_file(files[split] if split == "test" else files["train"]), max_items)
        data = read_prompt_file(files["train"])
    elif path.is_file():
        data = read_prompt_file(path)
    else:
        raise DataFormatError(f"{path}: no such prompt file or folder")
    n_test = math.ceil(len(data) * test_fraction) if test_fraction > 0 else 0
    if n_test >= len(data):
        raise DataFormatError(f"{path}: {len(data)} prompts leave none for training with test_fraction {test_fraction}")
    cut = len(data) - n_test
    part = slice(0, cut) if split == "train" else slice(cut, None)
    return _limit(PromptSet(data.prompts[part], data.sources[part], data.metadata[part]), max_items)


def _limit(data: PromptSet, max_items: int | None) -> PromptSet:
    if max_items is None:
        return data
    return PromptSet(data.prompts[:max_items], data.sources[:max_items], data.metadata[:max_items])
