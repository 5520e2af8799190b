"""The run lock cannot be bypassed (issue 28): deleting ``.mmalign.lock`` or setting ``RANK`` does not let a second
run into a folder a live run holds, and a lock recorded by another host is refused until ``mmalign unlock``. Every
contender is a real process; before, the first two got in and the third took the folder over as "no longer
running"."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mmalign.run_lock import LOCK_NAME, lock_run_folder, release_run_folder
from tests.helpers import REPO

CONTENDER = ("import sys; from mmalign.recipe_entry import run_recipe; from mmalign.run_lock import lock_run_folder; "
             "raise SystemExit(run_recipe(lambda argv: print('LOCKED', lock_run_folder(sys.argv[1]))))")
"""A recipe's first act (lock the output folder) under the recipes' entry point: exit 2 and one line when refused."""


def _contend(folder, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", CONTENDER, str(folder)], env={**full_env, **env},
                          capture_output=True, text=True, timeout=120, cwd=REPO)


@pytest.fixture
def holder(tmp_path):
    """A live process holding ``tmp_path / 'run'``."""
    out = tmp_path / "run"
    code = ("import sys, time; from mmalign.run_lock import lock_run_folder; lock_run_folder(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(120)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    yield out, proc
    proc.kill()
    proc.wait()


def test_deleting_the_lock_file_does_not_let_a_second_run_in(holder):
    out, proc = holder
    (out / LOCK_NAME).unlink()
    result = _contend(out)
    assert result.returncode == 2 and "LOCKED" not in result.stdout, result.stdout + result.stderr
    assert "is in use by another run" in result.stderr and f"{LOCK_NAME} was deleted" in result.stderr
    proc.kill()
    proc.wait()  # the holder's end releases the folder: the next run gets in
    assert _contend(out).returncode == 0


@pytest.mark.parametrize("env", [{"RANK": "1"}, {"RANK": "3", "WORLD_SIZE": "4"}, {"RANK": "1", "WORLD_SIZE": "1"}])
def test_environment_variables_do_not_skip_the_lock(holder, env):
    out, proc = holder
    result = _contend(out, **env)
    assert result.returncode == 2 and "LOCKED" not in result.stdout, result.stdout + result.stderr
    assert f"in use by another run (PID {proc.pid} on " in result.stderr


def test_a_launched_non_main_rank_does_not_lock(tmp_path):
    """Inside a launcher's rendezvous a non-zero rank leaves the lock to its rank 0 (it cannot start its process
    group without it), so torchrun's workers do not refuse each other."""
    lock_run_folder(tmp_path)
    try:
        result = _contend(tmp_path, RANK="1", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT="29999")
    finally:
        release_run_folder(tmp_path)
    assert result.returncode == 0 and "LOCKED None" in result.stdout, result.stderr


def test_another_hosts_lock_is_refused_until_unlocked(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    record = {"pid": 4242, "host": "gpu-node-17", "started": "2026-12-01 10:00:00"}
    (out / LOCK_NAME).write_text(json.dumps(record))  # no process here holds it: the run on gpu-node-17 may
    result = _contend(out)
    assert result.returncode == 2 and "LOCKED" not in result.stdout, result.stdout + result.stderr
    assert "recorded as in use by PID 4242 on gpu-node-17 (started 2026-12-01 10:00:00)" in result.stderr
    assert f"take the folder over with `mmalign unlock {out.resolve()}`" in result.stderr

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    unlock = subprocess.run([sys.executable, "-m", "mmalign", "unlock", str(out)], capture_output=True, text=True,
                            env=env, timeout=120, cwd=REPO)
    assert unlock.returncode == 0 and json.loads(unlock.stdout)["cleared"] == record, unlock.stderr
    assert _contend(out).returncode == 0


def test_unlock_refuses_a_folder_a_live_run_holds(holder):
    out, proc = holder
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    unlock = subprocess.run([sys.executable, "-m", "mmalign", "unlock", str(out)], capture_output=True, text=True,
                            env=env, timeout=120, cwd=REPO)
    assert unlock.returncode == 2 and f"PID {proc.pid}" in unlock.stderr
    assert str(proc.pid) in (out / LOCK_NAME).read_text()
