"""One run per output folder: an exclusive ``flock`` on the folder itself and on ``<output_dir>/.mmalign.lock``,
which records the holder (PID, host, start time).

A second run on the same folder fails at once with :class:`RunFolderLockedError` naming the holder. The locks are
OS file locks, so a process that dies (even by SIGKILL) releases them: the next run takes the folder over and says
whose stale lock it replaced. Locking the folder's own descriptor means deleting ``.mmalign.lock`` does not let a
second run in (a new file of that name is a new inode with no lock on it; the folder is the same one); the record
file is locked too, for holders that lock only it. Locks are per process and re-entrant (a recipe locks the folder
before writing anything, and :func:`mmalign.training.loop.train` locks it again); they are released when the process ends,
or by :func:`release_run_folder`.

Only the main process of a distributed run locks. A process counts as a non-main rank only inside a launcher's
rendezvous (``WORLD_SIZE`` > 1, ``0 < RANK < WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set): such a process
cannot start its process group without its rank 0, which holds the lock. A bare ``RANK=1`` locks like any run.

A lock recorded by another host is refused even when no lock is held: a file lock taken on another machine is not
always visible here (network filesystems), so this host cannot tell whether that run is still alive. Taking such a
folder over is an explicit act: ``mmalign unlock <output_dir>`` (:func:`unlock_run_folder`).

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
UNLOCK_COMMAND = "mmalign unlock"
_held: dict[str, tuple[int, int | None]] = {}


class RunFolderLockedError(RuntimeError):
    """Another live process holds the output folder (or another host recorded it and it was not unlocked)."""


def lock_path(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / LOCK_NAME


def launched_rank() -> int:
    """This process's rank in a launcher's rendezvous (torchrun, accelerate launch), else 0."""
    env = os.environ
    try:
        rank, world = int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1"))
    except ValueError:
        return 0
    if world > 1 and 0 < rank < world and env.get("MASTER_ADDR") and env.get("MASTER_PORT"):
        return rank
    return 0


def lock_run_folder(output_dir: str | os.PathLike) -> str | None:
    """Lock ``output_dir`` (created if needed) for this process; returns a note when a stale lock was taken over.

    Raises :class:`RunFolderLockedError` when a live process holds it, or when another host recorded it.
    """
    if launched_rank() != 0:
        return None
    root = Path(output_dir).expanduser().resolve()
    if str(root) in _held:
        return None
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    dir_fd, fd = _acquire(root, path, output_dir)
    previous = _read(fd)
    host = socket.gethostname()
    if previous.get("pid") and previous.get("host") not in (None, host):
        _close(dir_fd, fd)
        raise RunFolderLockedError(
            f"output_dir {str(output_dir)!r} is recorded as in use by {_who(previous)}"
            + (f" (started {previous['started']})" if previous.get("started") else "") + f": from this host ({host}) "
            f"there is no telling whether that run is still alive; if it is not, take the folder over with "
            f"`{UNLOCK_COMMAND} {root}`, or choose another output_dir (lock file: {path})"
        )
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": host,
                              "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
    if not _held:
        atexit.register(_release_all)  # a clean exit leaves an empty lock file; only a killed run leaves its PID
    _held[str(root)] = (fd, dir_fd)
    if previous.get("pid") and previous.get("pid") != os.getpid():
        return f"took over the stale lock of PID {previous['pid']} (no longer running) on {root}"
    return None


def unlock_run_folder(output_dir: str | os.PathLike, clear: bool = True) -> dict[str, Any]:
    """Clear (``clear``) the lock record of ``output_dir`` (what another host or a killed run left); return it.

    Raises :class:`RunFolderLockedError` when a process holds the lock, as a run would."""
    root = Path(output_dir).expanduser().resolve()
    path = root / LOCK_NAME
    if not root.is_dir():
        raise FileNotFoundError(f"{output_dir}: no such folder")
    dir_fd, fd = _acquire(root, path, output_dir)
    try:
        previous = _read(fd)
        if clear:
            os.ftruncate(fd, 0)
    finally:
        _close(dir_fd, fd)
    return previous


def release_run_folder(output_dir: str | os.PathLike) -> None:
    """Release this process's lock on ``output_dir`` (no-op if it holds none)."""
    held = _held.pop(str(Path(output_dir).expanduser().resolve()), None)
    if held is not None:
        fd, dir_fd = held
        os.ftruncate(fd, 0)
        _close(dir_fd, fd)  # closing the descriptors releases the flocks


def _acquire(root: Path, path: Path, shown: str | os.PathLike) -> tuple[int | None, int]:
    """Exclusive non-blocking flocks on the folder and on the record file: ``(folder fd or None, file fd)``."""
    dir_fd: int | None = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(dir_fd)
        _refuse_held(path, shown)
    except OSError:  # a filesystem without locks on folders: the record file's lock alone
        os.close(dir_fd)
        dir_fd = None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        _close(dir_fd, fd)
        _refuse_held(path, shown)
    return dir_fd, fd


def _refuse_held(path: Path, shown: str | os.PathLike) -> None:
    holder: dict[str, Any] = {}
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        pass  # deleted by hand: the folder's lock still names no one
    else:
        holder = _read(fd)
        os.close(fd)
    since = f", running since {holder['started']}" if holder.get("started") else ""
    who = _who(holder) if holder.get("pid") else f"its record {LOCK_NAME} was deleted, the folder's own lock holds"
    raise RunFolderLockedError(
        f"output_dir {str(shown)!r} is in use by another run ({who}{since}); wait for it to finish, stop "
        f"it, or choose another output_dir (lock file: {path})"
    ) from None


def _who(holder: dict[str, Any]) -> str:
    return f"PID {holder.get('pid', '?')}" + (f" on {holder['host']}" if holder.get("host") else "")


def _close(dir_fd: int | None, fd: int) -> None:
    os.close(fd)
    if dir_fd is not None:
        os.close(dir_fd)


def _release_all() -> None:
    for key in list(_held):
        release_run_folder(key)


def _read(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0)
        return json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}
