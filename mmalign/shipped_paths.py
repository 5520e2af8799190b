"""Paths that ship with the repository (``assets/...``, scorer cards' default checkpoints) work from any directory.

A relative path in a config (``model.pretrained: assets/toy/pipeline``) names a file of the current directory when
it exists there, else the repository's; either way the run records the absolute path, so ``mmalign export`` of the
run folder works from anywhere. Hub ids and ``tiny:`` placeholders (no such local path) are left unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def resolve_shipped(ref: str | os.PathLike | None, root: Path = REPO_ROOT) -> str | None:
    """``ref`` made absolute: against the cwd if it exists there, else against ``root``; unchanged otherwise."""
    if ref is None or str(ref) == "":
        return ref if ref is None else str(ref)
    path = Path(ref).expanduser()
    if path.is_absolute():
        return str(path)
    for base in (Path.cwd(), root):
        if (base / path).exists():
            return os.path.abspath(base / path)
    return str(ref)
