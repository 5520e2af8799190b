"""Disk-full errors in words: "no space left on device while writing <path>; the last complete checkpoint is ...".

torch's zip writer reports a full disk as ``basic_ios::clear: iostream error`` or ``unexpected pos ...`` and
safetensors as an ``OSError`` deep in Rust; :func:`writing` turns all of them into :class:`DiskFullError`, naming
the file or folder being written and what survives. A write error with an errno of ENOSPC / EDQUOT anywhere in
its chain is a full disk; EFBIG (the process's file size limit, ``ulimit -f``: Python ignores SIGXFSZ) counts as
one (a smaller write may still fit); a torch stream error counts as one when the filesystem has less than
:data:`LOW_SPACE_BYTES` free afterwards.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

LOW_SPACE_BYTES = 64 * 2**20
_STREAM_MESSAGES = ("iostream error", "unexpected pos", "file write failed", "no space left")


class DiskFullError(OSError):
    """The disk filled up while writing; the message names the path and what is left to recover from."""

    path: str | None = None
    """The file or folder being written."""


def free_bytes(path: str | os.PathLike) -> int | None:
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def is_disk_full(exc: BaseException, path: str | os.PathLike) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return True
        text = str(current).lower()
        if "no space left" in text or "disk quota exceeded" in text:
            return True
        if any(m in text for m in _STREAM_MESSAGES):
            free = free_bytes(path)
            if free is not None and free < LOW_SPACE_BYTES:
                return True
        current = current.__cause__ or current.__context__
    return False


def reason(exc: BaseException) -> str:
    """What filled up, in words: the disk, or the file size limit of the process (``ulimit -f``: EFBIG)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.EFBIG:
            return "file size limit reached (ulimit -f)"
        current = current.__cause__ or current.__context__
    return "no space left on device"


@contextmanager
def writing(path: str | os.PathLike, survivor: Callable[[], str], cleanup: Callable[[], None] | None = None
            ) -> Iterator[None]:
    """Translate a disk-full error raised inside the block into :class:`DiskFullError`.

    ``survivor()`` describes what is left to recover from (called only on failure, e.g. "the last complete
    checkpoint is <path>"); ``cleanup()`` runs first on any failure (remove a half-written temporary folder).
    """
    try:
        yield
    except Exception as exc:
        if cleanup is not None:
            cleanup()
        if is_disk_full(exc, path):
            error = DiskFullError(errno.ENOSPC, f"{reason(exc)} while writing {path}; {survivor()}")
            error.path = str(path)
            raise error from exc
        raise
