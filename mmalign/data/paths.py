"""File references in data rows stay inside the data set's folder and are read only as bounded regular files.

A jsonl/csv row may name an image by path. Relative paths resolve against the data set's folder (the data file's
folder, or the configured image root); a path that ends up outside it -- absolute, a ``../`` traversal, or a symlink
that points out -- is an error unless ``data.allow_outside_paths: true``. Only regular files are opened (a FIFO
would block the reader forever, ``/dev/zero`` would fill memory), and files over ``max_bytes`` are refused.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DEFAULT_MAX_FILE_BYTES = 256 * 2**20
"""Largest image/video file read (256 MiB; a 8k x 8k 16-bit PNG is ~400 MB decoded but far smaller on disk)."""
ALLOW_KEY = "data.allow_outside_paths"


class DataPathError(ValueError):
    """A referenced file is outside the data set's folder, not a regular file, or too large."""


def resolve_inside(ref: str | os.PathLike, root: str | os.PathLike, allow_outside: bool = False) -> Path:
    """``root / ref`` (or ``ref`` if absolute), checked to stay inside ``root`` after following symlinks."""
    if "\x00" in os.fspath(ref):
        raise DataPathError(f"{os.fspath(ref)!r} contains a NUL character, which no file name can hold")
    root = Path(root).expanduser()
    path = Path(ref).expanduser()
    path = path if path.is_absolute() else root / path
    if allow_outside:
        return path
    real_root, real = os.path.realpath(root), os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root:
        how = ("an absolute path" if Path(ref).is_absolute() else "a '..' path" if ".." in Path(ref).parts
               else "a symlink")
        raise DataPathError(f"{ref} is {how} outside the data set's folder {root} (resolves to {real}); set "
                            f"{ALLOW_KEY}: true to read files outside it")
    return path


def read_regular_file(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; :class:`DataPathError` otherwise (never blocks)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: opening a FIFO does not wait for a writer
    except ValueError as exc:  # a NUL character in the name
        raise DataPathError(f"cannot read {os.fspath(path)!r} ({exc})") from exc
    except OSError as exc:
        raise DataPathError(f"cannot read {path} ({type(exc).__name__}: {exc.strerror or exc})") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DataPathError(f"{path} is not a regular file ({_kind(info.st_mode)})")
        if info.st_size > max_bytes:
            raise DataPathError(f"{path} is {info.st_size} bytes, more than the limit of {max_bytes}")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise DataPathError(f"{path} grew past the limit of {max_bytes} bytes while being read")
    return data


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"
