"""Fixtures for the shared-loop tests: the tiny problem module and a clean accelerate state per test."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent
TINY_RUN_SCRIPT = HERE / "tiny_run.py"


def _load_tiny_run():
    spec = importlib.util.spec_from_file_location("mmalign_tests_core_tiny_run", TINY_RUN_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny():
    """The module ``tests/core/tiny_run.py`` (dataset, model, step_fn, driver)."""
    return _load_tiny_run()


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each in-process ``train()`` call must start from a fresh accelerate singleton state."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def run_process_group(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own session; on timeout kill the whole group (torchrun's workers included)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"timed out after {timeout}s: {' '.join(cmd)}\n{out[-2000:]}\n{err[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture(scope="session")
def run_group():
    """:func:`run_process_group` as a fixture (test modules cannot import conftest under importlib mode)."""
    return run_process_group
