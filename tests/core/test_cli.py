"""The ``mmalign`` console script and ``python -m mmalign`` start (issue 2, item 1).

Each start imports every discovered command module (cli.py), so this also catches a broken command import.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CONSOLE_SCRIPT = Path(sys.executable).parent / "mmalign"


@pytest.mark.parametrize("cmd", [[str(CONSOLE_SCRIPT), "--help"], [sys.executable, "-m", "mmalign", "--help"]],
                         ids=["console-script", "python-m"])
def test_help_exits_zero(cmd):
    if cmd[0] == str(CONSOLE_SCRIPT) and not CONSOLE_SCRIPT.exists():
        pytest.fail(f"console script not installed next to the interpreter: {CONSOLE_SCRIPT}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: mmalign") and "accelerate launch" in proc.stdout

