"""The package's layers, read from the imports of every module (issue 23 item 6): pure losses import no model code,
the family packages never import the test builders, the data readers import neither family.

Every ``import`` / ``from ... import`` counts, also those inside functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

MODEL_LIBRARIES = ("transformers", "diffusers", "peft", "accelerate", "open_clip", "scorers")
RULES = [
    # (folder, forbidden import prefixes, why)
    ("objectives", ("mmalign.diffusion", "mmalign.mllm", "mmalign.data", "mmalign.testing", "mmalign.toy",
                    "mmalign.training", *MODEL_LIBRARIES), "objectives/ holds pure losses on scores: no model code"),
    ("diffusion", ("mmalign.testing",), "diffusion/ never imports the test builders (tiny: is resolved above it)"),
    ("mllm", ("mmalign.testing",), "mllm/ never imports the test builders (tiny: is resolved above it)"),
    ("data", ("mmalign.diffusion", "mmalign.mllm"), "data/ reads rows for every family and imports neither"),
]


def imported_modules(path: Path, root: Path = REPO) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in ``path`` (relative imports resolved against its package)."""
    package = path.relative_to(root).with_suffix("").parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = ".".join(package[: len(package) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]  # from mmalign import testing
    return found


def violations(folder: str, forbidden: tuple[str, ...], root: Path = REPO) -> list[str]:
    out = []
    for path in sorted((root / "mmalign" / folder).rglob("*.py")):
        hits = {(line, next(f for f in forbidden if module == f or module.startswith(f + ".")))
                for line, module in imported_modules(path, root)
                if any(module == f or module.startswith(f + ".") for f in forbidden)}
        out += [f"{path.relative_to(root)}:{line} imports {name}" for line, name in sorted(hits)]
    return out


@pytest.mark.parametrize("folder,forbidden,why", RULES, ids=[r[0] for r in RULES])
def test_layer(folder, forbidden, why):
    assert violations(folder, forbidden) == [], why


def test_the_reader_sees_every_kind_of_import(tmp_path):
    pkg = tmp_path / "mmalign" / "objectives"
    pkg.mkdir(parents=True)
    (pkg / "bad.py").write_text("import transformers\nfrom mmalign import testing\nimport torch\n"
                                "def f():\n    from ..diffusion import scores\n    from peft.tuners import lora\n"
                                "    from .pairwise import Metrics\n")
    assert violations("objectives", RULES[0][1], tmp_path) == [
        "mmalign/objectives/bad.py:1 imports transformers", "mmalign/objectives/bad.py:2 imports mmalign.testing",
        "mmalign/objectives/bad.py:5 imports mmalign.diffusion", "mmalign/objectives/bad.py:6 imports peft"]


FILE_RULES = [
    ("diffusion/registry.py", ("mmalign.diffusion.ppd", "mmalign.diffusion.steps", "mmalign.diffusion.build"),
     "the method registry names its methods' code as strings; importing a method package runs back up"),
    ("diffusion/options.py", ("mmalign.diffusion.ppd", "torch"), "the options sections stay light"),
    ("diffusion/step_context.py", ("mmalign.diffusion.registry", "mmalign.diffusion.ppd", "mmalign.diffusion.steps"),
     "what every step builds on (PPD's step too) imports no dispatch"),
]


@pytest.mark.parametrize("file,forbidden,why", FILE_RULES, ids=[r[0] for r in FILE_RULES])
def test_no_import_runs_back_up_in_diffusion(file, forbidden, why):
    path = REPO / "mmalign" / file
    hits = [f"{line} {module}" for line, module in imported_modules(path)
            if any(module == f or module.startswith(f + ".") for f in forbidden)]
    assert hits == [], why
