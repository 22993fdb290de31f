"""Atomic file writing: a temporary file in the target's folder, fsync, rename.

The ground floor's one way to write a file that a crash must not leave half-written
(profiles here; model files and checkpoints in :mod:`tinydl.io`, which re-exports these).
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_writer"]


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename.

    A crash at any point leaves either the previous file or the complete new one.  Errors
    (a full disk, a read-only directory) propagate as ``OSError`` and leave the previous file
    untouched.
    """
    with atomic_writer(path) as fh:
        fh.write(data)


@contextlib.contextmanager
def atomic_writer(path):
    """:func:`atomic_write_bytes` for content written piece by piece: yields a binary file
    open on a temporary file beside ``path``; on a clean exit it is flushed, fsync'ed and
    renamed over ``path``, on an exception removed (the previous file, if any, intact).  A
    large file (a checkpoint's window of raw rows) is then never held whole in memory.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=directory)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        # mkstemp makes the file 0600: the file gets the mode open() would have given it
        # (the one it replaces keeps its own)
        if hasattr(os, "fchmod"):
            os.fchmod(fd, _mode_for(path))
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.errno is not None:  # name the file in the error
            raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc} (the "
                          "previous file, if any, is intact)") from exc
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _mode_for(path) -> int:
    """The permission bits a file written at ``path`` should have: those of the file it
    replaces, else 0666 less the process's umask (as ``open(path, "w")`` creates it)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        pass
    mask = os.umask(0o022)  # read by setting (no getter); put back at once
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))
