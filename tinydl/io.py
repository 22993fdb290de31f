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
import math
import os
import zipfile
import zlib
from typing import Dict, Iterable, Mapping, Optional

import numpy as np

from hal._files import (  # re-exported (moved to hal)
    atomic_write_bytes,
    atomic_write_text,
    atomic_writer,
)

from .errors import ModelFileError

__all__ = ["ModelFileError", "save_npz", "load_npz", "atomic_write_bytes", "atomic_write_text",
           "FORMAT_KEY", "MAX_FILE_BYTES", "read_npy_header", "check_npz", "check_npy_file"]

FORMAT_KEY = "__tinydl_format__"
#: refuse to open model files larger than this (bytes); a defence against hostile files
MAX_FILE_BYTES = int(os.environ.get("TINYDL_MAX_FILE_BYTES", 8 * 2 ** 30))
#: refuse a ``.npz`` whose members would take more than this (bytes) once decompressed: a
#: small deflated file may declare gigabytes (a zip bomb); checked before anything is read
MAX_ARRAY_BYTES = int(os.environ.get("TINYDL_MAX_ARRAY_BYTES", MAX_FILE_BYTES))


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
    with atomic_writer(path) as fh:
        _write_npz(fh, payload)


#: bytes per write of an array's data into a ``.npz`` member (views, never copies)
_WRITE_BYTES = 1 << 20


def _write_npz(fh, payload: Mapping[str, np.ndarray]) -> None:
    """The uncompressed ``.npz`` that ``np.savez(fh, **payload)`` writes (``.npy`` members,
    zip64), each array's data written from views of its own memory: ``np.savez`` would
    pass through a 16 MiB copy per array (and a whole-file buffer before), a transient as
    large as a checkpoint's window of raw rows."""
    fmt = np.lib.format
    with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED,
                         allowZip64=True) as zf:
        for key, arr in payload.items():
            # a 2-D view whose rows are contiguous (a block of a larger matrix) is written
            # row by row: the same bytes as its contiguous copy, without the copy
            by_rows = (not arr.flags.c_contiguous and arr.ndim == 2 and arr.size
                       and arr.strides[1] == arr.itemsize and arr.dtype.kind != "U")
            if not arr.flags.c_contiguous and not by_rows:  # a copy only of such a view
                arr = np.ascontiguousarray(arr)
            with zf.open(key + ".npy", "w", force_zip64=True) as fid:
                header = fmt.header_data_from_array_1_0(arr)
                header["fortran_order"] = False
                try:
                    fmt.write_array_header_1_0(fid, header)
                except ValueError:  # a header too long for format 1.0
                    fmt.write_array_header_2_0(fid, header)
                for part in (arr if by_rows else (arr.reshape(-1),)):
                    flat = part.view(np.uint8)
                    for s in range(0, flat.size, _WRITE_BYTES):
                        fid.write(flat[s:s + _WRITE_BYTES])


def read_npy_header(fh, where: str = "array"):
    """Parse the header of a ``.npy`` stream positioned at its start, without reading data.

    Returns ``(shape, fortran_order, dtype, nbytes)``, ``nbytes`` computed with Python
    integers (no overflow).  Raises :class:`ModelFileError` for a damaged header, a negative
    dimension, an object dtype (it would need pickle) or a dtype without a fixed size.
    """
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except Exception as exc:  # a hostile header: SyntaxError, tokenize.TokenError, ...
        raise ModelFileError(f"{where}: damaged .npy header ({type(exc).__name__}: "
                             f"{exc})") from None
    if dtype.hasobject:
        raise ModelFileError(f"{where}: holds Python objects (dtype {dtype}); refused, it "
                             "would need pickle")
    if any(int(d) < 0 for d in shape):
        raise ModelFileError(f"{where}: negative dimension in shape {tuple(shape)}")
    nbytes = math.prod(int(d) for d in shape) * dtype.itemsize
    return tuple(int(d) for d in shape), bool(fortran), dtype, nbytes


def check_npz(zf: "zipfile.ZipFile", where: str, limit: Optional[int] = None) -> None:
    """Check every member of an open ``.npz`` *before* any array is allocated.

    Every member must be a ``.npy`` whose header parses, whose declared size (shape x
    itemsize) fits in the bytes the member holds, and all members together must fit in
    ``limit`` bytes (default :data:`MAX_ARRAY_BYTES`).  Raises :class:`ModelFileError`.
    """
    limit = MAX_ARRAY_BYTES if limit is None else int(limit)
    seen, total = set(), 0
    for info in zf.infolist():
        name = info.filename
        if not name.endswith(".npy"):
            raise ModelFileError(f"{where}: member {name!r} is not a .npy array")
        if name in seen:
            raise ModelFileError(f"{where}: member {name!r} appears twice")
        seen.add(name)
        total += info.file_size
        if total > limit:
            raise ModelFileError(f"{where}: members decompress to more than {limit} bytes "
                                 f"(member {name!r} declares {info.file_size}); refused "
                                 "(set TINYDL_MAX_ARRAY_BYTES to raise the limit)")
        with zf.open(info) as fh:
            shape, _, dtype, nbytes = read_npy_header(fh, f"{where}: member {name!r}")
            held = info.file_size - fh.tell()
        if nbytes > held:
            raise ModelFileError(f"{where}: member {name!r} declares shape {shape} of {dtype} "
                                 f"({nbytes} bytes) but holds {held} bytes of data")


def check_npy_file(path) -> tuple:
    """:func:`read_npy_header` on a ``.npy`` file, also checking its declared size against
    the bytes the file holds; returns ``(shape, fortran_order, dtype, data_offset)``."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        shape, fortran, dtype, nbytes = read_npy_header(fh, path)
        offset = fh.tell()
    if nbytes > size - offset:
        raise ModelFileError(f"{path}: declares shape {shape} of {dtype} ({nbytes} bytes) but "
                             f"holds {size - offset} bytes of data")
    return shape, fortran, dtype, offset


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
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            try:  # sizes are checked before any array is allocated
                check_npz(zf, path)
            except ModelFileError as exc:
                raise ModelFileError(f"{path} is not a readable .npz file: "
                                     f"{str(exc).replace(path + ': ', '', 1)}") from None
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            data = {name: z[name] for name in z.files}
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError,
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


def array_digest(arrays) -> str:
    """SHA-256 over named arrays (names, dtypes, shapes and bytes, in name order): what a
    model file stores to detect corruption that still parses."""
    import hashlib
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        # the array's own buffer (contiguous): no bytes copy of a model-sized array
        h.update(a.reshape(-1).view(np.uint8) if a.dtype.kind != "U" else str(a).encode())
    return h.hexdigest()


def verify_digest(data, path) -> None:
    """Pop the ``"sha256"`` member of arrays read from ``path`` and check it against the
    rest (:func:`array_digest`); raise :class:`ModelFileError` on a mismatch."""
    digest = str(data.pop("sha256"))
    if array_digest(data) != digest:
        raise ModelFileError(f"{path}: checksum mismatch: the file was modified after it was "
                             "written")


def save_png(fig, path, dpi: int = 120) -> str:
    """Render a matplotlib figure to PNG and write it atomically; close the figure."""
    import io as _io

    import matplotlib.pyplot as plt
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
