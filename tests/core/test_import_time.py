"""Config schemas import no heavy library: loading a config (``--help``, a bad key) takes a fraction of a second
and fails before torch is imported. Checked with ``python -X importtime`` in a fresh interpreter, so the test
does not depend on timing, plus a loose wall-clock bound."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO

HEAVY = ("torch", "transformers", "diffusers", "accelerate")
"""Top-level packages a config schema must not import (directly or through anything it imports)."""

LIGHT_SCHEMAS = [
    "mmalign.train_config",
    "mmalign.choices",
    "mmalign.mllm.vlm.config",
    "mmalign.mllm.video.config",
    "mmalign.diffusion.config",
    "mmalign.diffusion.registry",
]
"""Modules that must stay light."""

WALL_SECONDS = 5.0
"""Loose: each of these imports in ~0.1-0.3 s on an idle machine, torch alone takes ~1.5 s; the bound only
catches a regression on a loaded CI machine without flaking."""


def _imported_modules(module: str) -> tuple[list[str], float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True,
                            text=True, env=env, cwd=REPO, timeout=120)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-2000:]
    # "import time: <self us> | <cumulative us> | <indented name>"
    names = [line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
             if line.startswith("import time:") and line.count("|") == 2]
    return names[1:], elapsed  # the first line is the table header


@pytest.mark.parametrize("module", LIGHT_SCHEMAS)
def test_schema_imports_no_heavy_library(module):
    names, elapsed = _imported_modules(module)
    assert module in names, f"{module} was not imported at all (importtime output changed?)"
    heavy = sorted({n for n in names if n.split(".")[0] in HEAVY})
    assert not heavy, f"import {module} imports {heavy[:8]}"
    assert elapsed < WALL_SECONDS, f"import {module} took {elapsed:.2f} s"


def test_heavy_detection_is_not_vacuous():
    names, _ = _imported_modules("mmalign.training.loop")
    assert "torch" in names and "accelerate" in names


def test_the_video_method_list_is_one_table():
    """Issue 23: the video method names live in mmalign.mllm.video.methods.SPECS only (main wrote them in
    choices.VIDEO_METHODS, data/video_rows.METHODS and video_build.STEPS); every entry's hooks import."""
    import mmalign.choices
    import mmalign.data.video_rows
    from mmalign.mllm.video.config import MethodConfig
    from mmalign.mllm.video.methods import SPECS
    from mmalign.validate import rules_for

    assert not hasattr(mmalign.choices, "VIDEO_METHODS") and not hasattr(mmalign.data.video_rows, "METHODS")
    assert rules_for(MethodConfig)["name"].choices == tuple(SPECS)
    for spec in SPECS.values():
        assert callable(spec.hook("item")) and callable(spec.hook("step"))

