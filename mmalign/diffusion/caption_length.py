"""Captions longer than the text encoder's window (CLIP: 77 tokens) are truncated by the tokenizer; count them.

The count goes into the run summary (``data.captions_truncated``) and one warning line names how many and an
example, so a data set of long captions is not silently trained on its first ~60 words.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def count_overlong(prompts: Iterable[str], tokenizer: Any) -> tuple[int, int, str | None]:
    """``(overlong, unique captions, example)`` of the distinct ``prompts`` for ``tokenizer.model_max_length``."""
    unique = sorted({p for p in prompts if p})
    limit = int(tokenizer.model_max_length)
    overlong, example = 0, None
    for start in range(0, len(unique), 1024):
        chunk = unique[start:start + 1024]
        lengths = [len(ids) for ids in tokenizer(chunk, truncation=False, verbose=False).input_ids]
        for prompt, n in zip(chunk, lengths):
            if n > limit:
                overlong += 1
                example = example or prompt
    return overlong, len(unique), example


def dataset_prompts(dataset: Any) -> list[str]:
    """Every caption a preference data set trains on (single or dual captions)."""
    out = []
    for record in getattr(dataset, "records", []):
        out.append(record.prompt)
        if record.prompts:
            out.extend(record.prompts)
    return out


def report_overlong(dataset: Any, tokenizer: Any, print_fn=print) -> dict[str, int]:
    """Count, warn once (when any), and return the summary fields."""
    n, total, example = count_overlong(dataset_prompts(dataset), tokenizer)
    if n:
        short = example if len(example) <= 80 else example[:77] + "..."
        print_fn(f"warning: {n} of {total} distinct captions are longer than the text encoder's "
                 f"{tokenizer.model_max_length} tokens and are truncated (e.g. {short!r})")
    return {"captions_truncated": n, "captions_distinct": total}
