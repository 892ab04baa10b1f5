"""Small files the CLI reads and writes itself: a home's ``config.json`` and ``pending.json``,
a registration ticket, an authority key file.

What is read is input from disk: :func:`read_bounded` reads at most ``limit`` + 1 bytes of a
regular file and never blocks on a FIFO or a device (opened non-blocking, checked with
``fstat`` before any read). What is written replaces the file whole or not at all
(:func:`write_whole`): a new temporary file beside it (``O_EXCL``, so a file or symbolic link
planted under that name is not followed or overwritten), flushed to disk, then renamed over it.
Failures are :class:`OSError`, which the commands report as one line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path


def read_bounded(path: Path, limit: int) -> bytes:
    """At most ``limit`` + 1 bytes of the regular file ``path`` (the caller refuses more than
    ``limit``); :class:`OSError` for anything that is not a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_whole(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data``, whole or not at all; :class:`OSError` (also for a path
    with no file name, such as ``/`` or ``.``) leaves no temporary file behind."""
    if not path.name or path.name in (".", ".."):
        raise OSError(errno.EISDIR, "not a file name")
    tmp = path.with_name(f".{path.name}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
