"""Creating files in folders someone else may also write (the store, a certificates folder).

Whoever can write the store could plant a symbolic link under a name one of our writers is
about to use, and have the lab's process write through it into any file the lab's user
may write (its private key, say). So every temporary file is created under a random name
with ``O_CREAT | O_EXCL`` (which fails on an existing name, a symbolic link included,
whatever it points to) and ``O_NOFOLLOW``, and lock files are opened without following a
link either.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def temp_beside(path: Path) -> Path:
    """A fresh hidden name beside ``path``: ``.NAME.<random>.tmp``."""
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")


def write_new(path: Path, data: bytes, *, fsync: bool = False, mode: int = 0o666) -> None:
    """Create ``path``, which must not exist (an existing name or a symbolic link there is
    ``FileExistsError``, never followed), and write ``data`` to it; with ``fsync`` the bytes
    are on disk when this returns. A failed write leaves no file. ``mode`` goes through
    the umask, as with ``open()``."""
    fd = os.open(path, _NEW, mode)
    try:
        view = memoryview(data)
        while view:  # a short write (full disk) raises or goes on
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def replace_with(path: Path, data: bytes, *, fsync: bool = False) -> None:
    """Put ``data`` at ``path`` atomically: written beside it under a new random name
    (:func:`write_new`, never through a planted link; with ``fsync`` on disk before the
    rename) and renamed over it; nothing is left behind on failure."""
    tmp = temp_beside(path)
    write_new(tmp, data, fsync=fsync)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def open_lock(path: Path) -> int:
    """A descriptor of the lock file ``path`` to ``flock``, created if need be; a symbolic
    link there is refused (``OSError``), not followed to create or open another file."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)


def sync_dir(folder: Path) -> None:
    """fsync a folder, so that a file newly named (or renamed) in it survives a power loss."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
