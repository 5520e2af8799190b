"""The recipes keep one skeleton: parse → build the family's parts → the shared loop → export → summary, with no
schema in the recipe file (issue 15)."""

from __future__ import annotations

import ast

from tests.helpers import REPO


def test_video_recipe_is_short_and_holds_no_dataclass():
    path = REPO / "recipes" / "video.py"
    text = path.read_text()
    assert len(text.splitlines()) <= 100
    tree = ast.parse(text)
    classes = [n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    assert classes == [], f"recipes/video.py defines classes {classes}: schemas belong in mmalign/mllm/video/config.py"
    assert "dataclass" not in text and "register(" not in text


RECIPES = ("diffusion", "vlm", "video")
SKELETON = ("load_config(", "lock_run_folder(", "make_accelerator(", "train(", "write_summary(", "run_recipe(main)")
"""What every recipe calls, in this order: parse → lock the output folder → accelerator → shared loop → summary."""


TABLES = ("METHODS", "STEPS", "REGISTRY", "SPECS")
"""The method tables (VLM steps, video step builders, diffusion registry, key specs): inside ``mmalign/`` a lookup
``TABLE[cfg.method.name]`` is how method knowledge is read; any other use of the name as a key is a branch."""


def _method_name_comparisons(tree: ast.AST, tables: tuple[str, ...] = ()) -> list[int]:
    """Lines where ``<...>.method.name`` (or a stage's ``.method``) is compared or used as a lookup key (a lookup
    into one of ``tables`` excepted)."""
    def is_method_name(node: ast.AST) -> bool:  # cfg.method.name, method.name, stage.method
        if not isinstance(node, ast.Attribute):
            return False
        owner = node.value
        if node.attr == "name":
            return isinstance(owner, ast.Attribute) and owner.attr == "method" or \
                isinstance(owner, ast.Name) and owner.id == "method"
        return node.attr == "method" and isinstance(owner, ast.Name) and owner.id == "stage"

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(is_method_name(n) for n in [node.left, *node.comparators]):
            membership = all(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) and all(
                isinstance(c, ast.Name) and c.id in tables for c in node.comparators)
            if not membership:  # ``name in TABLE`` validates, it does not branch
                lines.append(node.lineno)
        if isinstance(node, ast.Subscript) and is_method_name(node.slice):
            table = node.value
            if not (isinstance(table, ast.Name) and table.id in tables):
                lines.append(node.lineno)
    return lines


def test_recipes_hold_no_method_branches():
    """Method knowledge lives in the family's table (diffusion registry, vlm/objective.METHODS, video/build.STEPS)."""
    for name in RECIPES:
        tree = ast.parse((REPO / "recipes" / f"{name}.py").read_text())
        assert _method_name_comparisons(tree) == [], f"recipes/{name}.py branches on the method name"


def test_the_detector_sees_a_method_branch():
    tree = ast.parse('extra = {"dpo": 1}[method.name]\nif cfg.method.name != "sft":\n    pass\n')
    assert _method_name_comparisons(tree) == [1, 2]
    assert _method_name_comparisons(ast.parse("spec = STEPS[cfg.method.name]"), TABLES) == []


def test_the_package_holds_no_method_branches():
    """Issue 23: no ``method.name`` branch anywhere in ``mmalign/``: what is method-specific is a field of the
    method's entry (diffusion registry, VLM ``METHODS``, video ``STEPS`` / ``SPECS``)."""
    found = {}
    for path in sorted((REPO / "mmalign").rglob("*.py")):
        lines = _method_name_comparisons(ast.parse(path.read_text()), TABLES)
        if lines:
            found[str(path.relative_to(REPO))] = lines
    assert found == {}, f"method.name branches outside the tables: {found}"


def test_recipes_share_one_skeleton():
    for name in RECIPES:
        text = (REPO / "recipes" / f"{name}.py").read_text()
        positions = [text.find(call) for call in SKELETON]
        assert -1 not in positions, f"recipes/{name}.py lacks {SKELETON[positions.index(-1)]}"
        assert positions == sorted(positions), f"recipes/{name}.py calls the skeleton out of order: {positions}"
        assert "# 1. Config" in text, f"recipes/{name}.py: number its steps like the other recipes"
