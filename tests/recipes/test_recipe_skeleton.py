"""The recipes keep one skeleton: parse → build the family's parts → the shared loop → export → summary, with no
schema in the recipe file (issue 15)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_video_recipe_is_short_and_holds_no_dataclass():
    path = REPO / "recipes" / "video.py"
    text = path.read_text()
    assert len(text.splitlines()) <= 100
    tree = ast.parse(text)
    classes = [n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    assert classes == [], f"recipes/video.py defines classes {classes}: schemas belong in mmalign/mllm/video_config.py"
    assert "dataclass" not in text and "register(" not in text
