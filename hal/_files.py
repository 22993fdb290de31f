"""Atomic file writing: a temporary file in the target's folder, fsync, rename.

The ground floor's one way to write a file that a crash must not leave half-written
(profiles here; model files and checkpoints in :mod:`tinydl.io`, which re-exports these).
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading

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
        with os.fdopen(fd, "wb") as fh:
            # mkstemp makes the file 0600: it gets the mode open() would have given it (the
            # file it replaces keeps its own)
            if hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), _mode_for(path))
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
    return 0o666 & ~_umask()


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it
    (``/proc/self/status``); elsewhere by setting and restoring it under a lock (Python has
    no getter: two threads doing that at once could leave the other's value)."""
    try:  # "Umask:" is among the first lines; a few hundred bytes, no buffered file object
        # (a checkpoint write is priced in a small plan's footprint)
        fd = os.open("/proc/self/status", os.O_RDONLY)
        try:
            head = os.read(fd, 512)
        finally:
            os.close(fd)
        at = head.find(b"\nUmask:")
        if at >= 0:
            return int(head[at + 7:].split(None, 1)[0], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write_text(path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))
