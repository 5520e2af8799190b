"""One run per output folder: ``<output_dir>/.mmalign.lock`` holds an exclusive ``flock`` and the holder's PID.

A second run on the same folder fails at once with :class:`RunFolderLockedError` naming the holder (PID, host, start
time). The lock is an OS file lock, so a process that dies (even by SIGKILL) releases it: the next run takes the
folder over and says whose stale lock it replaced. Locks are per process and re-entrant (a recipe locks the folder
before writing anything, and :func:`mmalign.train.train` locks it again); they are released when the process ends,
or by :func:`release_run_folder`. Only the main process of a distributed run (``RANK`` 0) locks.

The lock file is never deleted (unlinking a locked file lets a third process lock a new file of the same name while
a second still waits on the old one); an unlocked, empty ``.mmalign.lock`` is harmless.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

LOCK_NAME = ".mmalign.lock"
_held: dict[str, int] = {}


class RunFolderLockedError(RuntimeError):
    """Another live process holds the output folder."""


def lock_path(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / LOCK_NAME


def lock_run_folder(output_dir: str | os.PathLike) -> str | None:
    """Lock ``output_dir`` (created if needed) for this process; returns a note when a stale lock was taken over.

    Raises :class:`RunFolderLockedError` when a live process holds it.
    """
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    root = Path(output_dir).expanduser().resolve()
    if str(root) in _held:
        return None
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read(fd)
        os.close(fd)
        who = f"PID {holder.get('pid', '?')}" + (f" on {holder['host']}" if holder.get("host") else "")
        since = f", running since {holder['started']}" if holder.get("started") else ""
        raise RunFolderLockedError(
            f"output_dir {str(output_dir)!r} is in use by another run ({who}{since}); wait for it to finish, stop "
            f"it, or choose another output_dir (lock file: {path})"
        ) from None
    previous = _read(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                              "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
    if not _held:
        atexit.register(_release_all)  # a clean exit leaves an empty lock file; only a killed run leaves its PID
    _held[str(root)] = fd
    if previous.get("pid") and previous.get("pid") != os.getpid():
        return f"took over the stale lock of PID {previous['pid']} (no longer running) on {root}"
    return None


def release_run_folder(output_dir: str | os.PathLike) -> None:
    """Release this process's lock on ``output_dir`` (no-op if it holds none)."""
    fd = _held.pop(str(Path(output_dir).expanduser().resolve()), None)
    if fd is not None:
        os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor releases the flock


def _release_all() -> None:
    for key in list(_held):
        release_run_folder(key)


def _read(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0)
        return json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}
