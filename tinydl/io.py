"""Safe persistence: ``.npz`` only, never pickle, always written atomically.

Every model, transform and checkpoint goes through :func:`save_npz` / :func:`load_npz`:

* writing goes to a temporary file in the same directory, is flushed and fsync'ed, then
  renamed over the target (and the directory fsync'ed), so a crash leaves either the old file
  or the new one, never a torn one;
* reading uses ``allow_pickle=False``, checks a format tag and version, and turns every kind of
  damage (truncation, a bad zip, a missing key, a wrong dtype) into :class:`ModelFileError`
  naming the file and the problem.
"""
from __future__ import annotations

import io
import os
import tempfile
import zipfile
from typing import Dict, Iterable, Mapping, Optional

import numpy as np

__all__ = ["ModelFileError", "save_npz", "load_npz", "atomic_write_bytes", "atomic_write_text",
           "FORMAT_KEY", "MAX_FILE_BYTES"]

FORMAT_KEY = "__tinydl_format__"
#: refuse to open model files larger than this (bytes); a defence against hostile files
MAX_FILE_BYTES = int(os.environ.get("TINYDL_MAX_FILE_BYTES", 8 * 2 ** 30))


class ModelFileError(ValueError):
    """A model, transform or checkpoint file is missing, damaged or of the wrong kind."""


def save_npz(path, arrays: Mapping[str, np.ndarray], kind: str, version: int = 1) -> None:
    """Write ``arrays`` to ``path`` atomically as an uncompressed ``.npz``.

    Parameters
    ----------
    path : str or os.PathLike
    arrays : mapping of str to array-like
        Object arrays are refused (they would need pickle).
    kind : str
        Format tag stored in the file and checked by :func:`load_npz`.
    """
    path = os.fspath(path)
    payload: Dict[str, np.ndarray] = {FORMAT_KEY: np.array(f"{kind}/{version}")}
    for key, value in arrays.items():
        arr = np.asarray(value)
        if arr.dtype.kind == "O":
            raise TypeError(f"array {key!r} has dtype object, which .npz can only store with "
                            "pickle; refusing")
        payload[key] = arr
    buf = io.BytesIO()
    np.savez(buf, **payload)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename.

    A crash at any point leaves either the previous file or the complete new one.  Errors
    (a full disk, a read-only directory) propagate as ``OSError`` and leave the previous file
    untouched.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_write_text(path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def load_npz(path, kind: str, required: Iterable[str] = (),
             max_version: int = 1) -> Dict[str, np.ndarray]:
    """Read a file written by :func:`save_npz` into a dict of arrays (all loaded).

    Raises
    ------
    ModelFileError
        If the file is absent, too large, truncated or corrupt, of another kind or a newer
        version, or lacks one of ``required``.
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if size > MAX_FILE_BYTES:
        raise ModelFileError(f"{path} is {size} bytes, above the limit of {MAX_FILE_BYTES} "
                             "(set TINYDL_MAX_FILE_BYTES to raise it)")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            data = {name: z[name] for name in z.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError,
            NotImplementedError, RuntimeError) as exc:
        raise ModelFileError(f"{path} is not a readable .npz file "
                             f"({type(exc).__name__}: {exc})") from None
    tag = data.pop(FORMAT_KEY, None)
    if tag is None or tag.dtype.kind != "U" or tag.shape != ():
        raise ModelFileError(f"{path} is not a tinydl file (no {FORMAT_KEY} tag)")
    got_kind, _, got_version = str(tag).partition("/")
    if got_kind != kind:
        raise ModelFileError(f"{path} holds a {got_kind!r}, expected a {kind!r}")
    try:
        version = int(got_version)
    except ValueError:
        raise ModelFileError(f"{path} has a malformed version tag {str(tag)!r}") from None
    if version > max_version:
        raise ModelFileError(f"{path} is format version {version}; this tinydl reads up to "
                             f"{max_version}")
    missing = [key for key in required if key not in data]
    if missing:
        raise ModelFileError(f"{path} lacks required array(s): {', '.join(missing)}")
    return data


def scalar(data: Mapping[str, np.ndarray], key: str, path: Optional[str] = None,
           kind: str = "f"):
    """Fetch a 0-d array from a loaded file as a Python scalar, checking its kind."""
    arr = data[key]
    if arr.shape != () or arr.dtype.kind not in (kind if kind != "f" else "fiu"):
        raise ModelFileError(f"{path or 'file'}: {key!r} should be a scalar of kind {kind!r}, "
                             f"got shape {arr.shape} dtype {arr.dtype}")
    return arr.item()
