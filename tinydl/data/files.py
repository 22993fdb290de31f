"""One reader per data format (``.npz``, ``.npy``, ``.csv``), shared by whole-file loading
(:func:`tinydl.data.load_dataset`) and chunked streaming (:func:`tinydl.data.open_stream`).

Every reader refuses damaged input with a :class:`~tinydl.errors.DataError` that names the
file and the problem; files are read with ``allow_pickle=False`` and sizes are checked before
anything large is allocated.  A ``.npz`` member stored uncompressed is memory-mapped in place,
a compressed one is read whole (``np.savez`` stores, ``np.savez_compressed`` deflates); a
``.npy`` is memory-mapped; a CSV is scanned once for its shape, header and labels and its
features are parsed a block of lines at a time.
"""
from __future__ import annotations

import io
import itertools
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import numpy as np

from ..errors import DataError, ModelFileError
from ..io import check_npy_file, check_npz, read_npy_header

__all__ = ["Dataset", "load_dataset", "features", "BUNDLED", "MAX_DATA_BYTES", "bundled_path",
           "resolve", "as_features", "as_labels", "check_finite", "NpzReader", "read_npy",
           "CsvReader", "CSV_EXTENSIONS", "read_arrays"]

#: datasets shipped inside the package (name -> file under tinydl/datasets)
BUNDLED = {"digits": "digits.npz"}
#: refuse data files larger than this many bytes unless told otherwise
MAX_DATA_BYTES = int(os.environ.get("TINYDL_MAX_DATA_BYTES", 16 * 2 ** 30))
#: extensions read as comma-separated numbers
CSV_EXTENSIONS = (".csv", ".txt", ".data")


def bundled_path(name: str) -> str:
    """Path of a bundled dataset file (``"digits"``).

    Raises
    ------
    DataError
        If there is no such bundled dataset.
    """
    if name not in BUNDLED:
        raise DataError(f"no bundled dataset {name!r}; bundled: {', '.join(BUNDLED)}")
    return os.path.join(os.path.dirname(os.path.dirname(__file__)), "datasets", BUNDLED[name])


def resolve(source) -> Tuple[str, str]:
    """``(path, extension)`` of a data file or bundled dataset name, checked to exist and to
    be within :data:`MAX_DATA_BYTES`.

    Raises
    ------
    DataError
    """
    source = os.fspath(source)
    if source in BUNDLED and not os.path.isfile(source):
        source = bundled_path(source)
    if not os.path.isfile(source):
        raise DataError(f"no such data file: {source}")
    size = os.path.getsize(source)
    if size > MAX_DATA_BYTES:
        raise DataError(f"{source} is {size} bytes, above the limit of {MAX_DATA_BYTES} "
                        "(set TINYDL_MAX_DATA_BYTES to raise it)")
    return source, os.path.splitext(source)[1].lower()


def as_features(arr, path, key, flatten: bool = True):
    """Check a feature array's kind and shape (values are not read: it may be mapped).

    Parameters
    ----------
    arr : array-like of shape (n_samples, n_features), or (n_samples, ...) with ``flatten``
    flatten : bool
        Reshape a sample of more than one axis (e.g. (125, 45)) into one row.

    Returns
    -------
    ndarray of shape (n_samples, n_features)

    Raises
    ------
    DataError
        For non-numbers, too few axes, or an empty array.
    """
    arr = np.asarray(arr) if not isinstance(arr, np.ndarray) else arr
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{path}: {key} has dtype {arr.dtype}; expected numbers")
    if arr.ndim < 2 or (arr.ndim > 2 and not flatten):
        raise DataError(f"{path}: {key} is {arr.ndim}-D (shape {arr.shape}); expected "
                        "(n_samples, n_features)")
    if arr.ndim > 2:  # e.g. Daily and Sports: (n, 125, 45) time x channels
        arr = arr.reshape(arr.shape[0], -1)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{path}: {key} is empty (shape {arr.shape})")
    return arr


def as_labels(arr, n, path, key, integer_only: bool = False):
    """Check labels: 1-D, one per sample, integer-valued (floats like ``3.0`` are converted).

    Parameters
    ----------
    arr : array-like of shape (n,)
    n : int
    integer_only : bool
        Refuse text labels too (a stream needs integer classes).

    Returns
    -------
    ndarray of shape (n,)

    Raises
    ------
    DataError
    """
    arr = np.asarray(arr)
    if arr.ndim != 1:
        raise DataError(f"{path}: {key} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise DataError(f"{path}: {key} has {arr.shape[0]} labels for {n} samples")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise DataError(f"{path}: {key} holds non-integer labels")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in ("biu" if integer_only else "biuU"):
        raise DataError(f"{path}: {key} has dtype {arr.dtype}; expected integer labels")
    return arr


def check_finite(X, path, key="features", first_row: int = 0) -> None:
    """Raise a DataError naming the first NaN or Inf of ``X`` (its row in the file and its
    column).

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features)
    first_row : int
        The file row of ``X[0]``.
    """
    # one float64 sum (NaN and Inf propagate) before the exact, allocating check
    with np.errstate(over="ignore", invalid="ignore"):
        if X.size == 0 or np.isfinite(np.add.reduce(X, axis=None, dtype=np.float64)):
            return
    bad = ~np.isfinite(X)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"{path}: {key} row {first_row + int(r)}, column {int(c)} is "
                        f"{X[r, c]}: {int(bad.sum())} NaN or Inf value(s) (features must be "
                        "finite numbers)")


class NpzReader:
    """The members of a ``.npz`` data file, each memory-mapped (stored) or read (deflated).

    Parameters
    ----------
    path : str

    Attributes
    ----------
    names : set of str
        The members (without ``.npy``).

    Raises
    ------
    DataError
        If the file is not a readable zip, or a member declares more than the limit.
    """

    def __init__(self, path):
        self.path = path
        try:
            with zipfile.ZipFile(path) as zf:
                # every member's declared size, before anything is mapped or allocated
                check_npz(zf, path, MAX_DATA_BYTES)
                self._infos = {i.filename: i for i in zf.infolist()}
        except ModelFileError as exc:
            raise DataError(str(exc)) from None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
            raise DataError(f"{path} is not a readable .npz file ({type(exc).__name__}: "
                            f"{exc})") from None
        self.names = {n[:-4] for n in self._infos if n.endswith(".npy")}

    def member(self, name: str) -> np.ndarray:
        """The array ``name``: memory-mapped when stored, read whole when compressed."""
        path, info = self.path, self._infos[name + ".npy"]
        try:
            if info.compress_type != zipfile.ZIP_STORED:
                with zipfile.ZipFile(path) as zf, zf.open(info) as fh:
                    return np.lib.format.read_array(fh, allow_pickle=False)
            with open(path, "rb") as fh:
                fh.seek(info.header_offset)
                local = fh.read(30)
                if len(local) != 30 or local[:4] != b"PK\x03\x04":
                    raise DataError(f"{path}: corrupt zip entry {name}")
                n_name, n_extra = struct.unpack("<HH", local[26:30])
                fh.seek(info.header_offset + 30 + n_name + n_extra)
                shape, fortran, dtype, n_bytes = read_npy_header(fh, f"{path}: {name}")
                offset = fh.tell()
            if offset + n_bytes > os.path.getsize(path):
                raise DataError(f"{path}: {name} is truncated ({shape} {dtype} needs "
                                f"{n_bytes} bytes past its header)")
            if n_bytes == 0:
                return np.zeros(shape, dtype)
            return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape),
                             order="F" if fortran else "C")
        except DataError:
            raise
        except ModelFileError as exc:
            raise DataError(str(exc)) from None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as exc:
            raise DataError(f"{path} is not a readable .npz file ({type(exc).__name__}: "
                            f"{exc})") from None


def read_npy(path) -> np.ndarray:
    """A ``.npy`` file, memory-mapped (its declared shape checked against its size first).

    Raises
    ------
    DataError
    """
    try:
        check_npy_file(path)
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ModelFileError as exc:
        raise DataError(str(exc)) from None
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npy file ({exc})") from None


def read_arrays(path, groups, what: str = "data") -> dict:
    """The first group of ``groups`` whose arrays a ``.npz`` holds all of, read whole with the
    data files' checks (a ``.npy``: its one array as the first group's first name).

    Parameters
    ----------
    path : str
    groups : sequence of tuple of str
        The acceptable sets of array names, in order of preference (e.g. ``(("X_val",
        "y_val"), ("X", "y"))``).
    what : str
        What the file is, for the messages (``"calibration data"``).

    Returns
    -------
    dict
        name -> ndarray (read into memory: the file may be replaced afterwards).

    Raises
    ------
    DataError
        If the file is missing, not a ``.npz``/``.npy``, damaged or truncated, holds Python
        objects, or none of the groups.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"no such data file: {path} (the {what})")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        return {groups[0][0]: np.array(read_npy(path))}
    if ext != ".npz":
        raise DataError(f"{path}: {what} must be a .npz (or .npy) file, got {ext or 'no'!r} "
                        "extension")
    npz = NpzReader(path)
    for group in groups:
        if set(group) <= npz.names:
            return {name: np.array(npz.member(name)) for name in group}
    want = " or ".join(", ".join(g) for g in groups)
    raise DataError(f"{path} holds arrays {sorted(npz.names)}; expected {want}")


class CsvReader:
    """A CSV of numbers, the label in one column (default: the last).

    The file is scanned once for its shape, an optional header (a first line that does not
    parse as numbers) and the labels; :meth:`chunks` then parses the features a block of
    lines at a time (:meth:`read_all` in one block).

    Parameters
    ----------
    path : str
    label_column : int, optional

    Attributes
    ----------
    n_samples, n_features : int
    labels : ndarray of shape (n_samples,)
    header : bool

    Raises
    ------
    DataError
        For ragged rows, a missing label column, no data, or non-integer labels.
    """

    def __init__(self, path, label_column: Optional[int] = None):
        self.path = path
        n, width, header, labels = 0, None, False, []
        try:
            with open(path, "r", encoding="utf-8", errors="strict") as fh:
                for ln in fh:
                    if not ln.strip():
                        continue
                    cells = ln.rstrip("\r\n").split(",")
                    if width is None:
                        width = len(cells)
                        try:
                            [float(c) for c in cells]
                        except ValueError:
                            header = True
                            continue
                    if len(cells) != width:
                        raise DataError(f"{path}: row {n + 1} has {len(cells)} columns, the "
                                        f"first has {width}")
                    labels.append(cells[-1 if label_column is None else
                                        int(label_column) % width])
                    n += 1
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not a CSV of numbers ({exc})") from None
        if width is None or n == 0:
            raise DataError(f"{path} is empty" + (" (a header but no data rows)"
                                                  if header else ""))
        if width < 2:
            raise DataError(f"{path}: needs at least one feature column and a label column")
        if label_column is not None and not -width <= int(label_column) < width:
            raise DataError(f"{path}: label column {label_column} is outside 0..{width - 1}")
        col = width - 1 if label_column is None else int(label_column) % width
        try:
            yf = np.array([float(v) for v in labels])
        except ValueError as exc:
            raise DataError(f"{path}: non-numeric value in label column {col} ({exc})") \
                from None
        self.labels = as_labels(yf, n, path, f"column {col}")
        self.n_samples, self.n_features, self.header = n, width - 1, header
        self._col = col

    def chunks(self, size: int, start: int = 0, stop: Optional[int] = None,
               dtype="float32", check: bool = True) -> Iterator[Tuple[int, np.ndarray]]:
        """Yield ``(first_row, features)``, features of shape (rows, n_features) (checked
        finite unless ``check`` is False)."""
        stop = self.n_samples if stop is None else min(int(stop), self.n_samples)
        with open(self.path, "r", encoding="utf-8", errors="strict") as fh:
            lines = (ln for ln in fh if ln.strip())
            if self.header:
                next(lines, None)
            lines = itertools.islice(lines, start, stop)
            row = start
            while row < stop:
                block = list(itertools.islice(lines, min(int(size), stop - row)))
                if not block:
                    break
                arr = self._parse(block, row)
                feats = np.delete(arr, self._col, axis=1).astype(dtype)
                if check:
                    check_finite(feats, self.path, first_row=row)
                yield row, feats
                row += len(block)

    def read_all(self, dtype=np.float64) -> np.ndarray:
        """Every row's features, shape (n_samples, n_features)."""
        return np.concatenate([X for _, X in self.chunks(max(self.n_samples, 1),
                                                         dtype=dtype)])

    def _parse(self, lines, first_row):
        path, width = self.path, self.n_features + 1
        try:
            arr = np.loadtxt(io.StringIO("".join(lines)), delimiter=",", ndmin=2)
        except ValueError as exc:
            raise DataError(f"{path}: non-numeric value in rows "
                            f"{first_row + int(self.header) + 1}-"
                            f"{first_row + len(lines) + int(self.header)} ({exc})") from None
        if arr.shape[1] != width:
            raise DataError(f"{path}: rows from {first_row} have {arr.shape[1]} columns, the "
                            f"file's first row has {width}")
        return arr


# -- whole files ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Dataset:
    """Training (and optionally test) data, samples as rows.

    Attributes
    ----------
    X_train : ndarray of shape (n_train, n_features)
    y_train : ndarray of shape (n_train,) or None
    X_test : ndarray of shape (n_test, n_features) or None
    y_test : ndarray of shape (n_test,) or None
    name : str
    """

    X_train: np.ndarray
    y_train: Optional[np.ndarray]
    X_test: Optional[np.ndarray] = None
    y_test: Optional[np.ndarray] = None
    name: str = ""
    #: one sample's shape before flattening, e.g. (125, 45) for Daily and Sports (time x channel)
    sample_shape: Optional[tuple] = None
    #: which of the paper's applications the data is ("smart-sensing", "indoor-localization",
    #: "speech-recognition") or "" when unknown; see :func:`guess_application`
    application: str = ""
    #: per-training-sample group (Daily and Sports: the subject 1..8), or None
    groups: Optional[np.ndarray] = None

    @property
    def n_features(self) -> int:
        """Features per sample."""
        return int(self.X_train.shape[1])


def features(arr, path, key):
    """Checked features read into memory: float32 (float64 for 8-byte input), finite.

    Parameters
    ----------
    arr : array-like of shape (n_samples, ...)
    path, key : str
        Named in errors.

    Returns
    -------
    ndarray of shape (n_samples, n_features)
    """
    arr = as_features(arr, path, key)
    out = np.array(arr, dtype=np.float32 if arr.dtype.itemsize <= 4 else np.float64)
    check_finite(out, path, key)
    return out


def _load_npz(path):
    npz = NpzReader(path)
    names = npz.names
    if {"X_train", "y_train"} <= names:
        raw_tr = npz.member("X_train")
        Xtr = features(raw_tr, path, "X_train")
        ytr = as_labels(npz.member("y_train"), len(Xtr), path, "y_train")
        Xte = yte = None
        if "X_test" in names:
            Xte = features(npz.member("X_test"), path, "X_test")
            if Xte.shape[1] != Xtr.shape[1]:
                raise DataError(f"{path}: X_test has {Xte.shape[1]} features, X_train "
                                f"{Xtr.shape[1]}")
            if "y_test" not in names:
                raise DataError(f"{path}: has X_test but no y_test")
            yte = as_labels(npz.member("y_test"), len(Xte), path, "y_test")
        shape = tuple(int(d) for d in raw_tr.shape[1:]) if raw_tr.ndim > 2 else None
        return Dataset(Xtr, ytr, Xte, yte, os.path.basename(path), sample_shape=shape)
    if "X" in names:
        raw = npz.member("X")
        X = features(raw, path, "X")
        y = as_labels(npz.member("y"), len(X), path, "y") if "y" in names else None
        shape = tuple(int(d) for d in raw.shape[1:]) if raw.ndim > 2 else None
        return Dataset(X, y, None, None, os.path.basename(path), sample_shape=shape)
    raise DataError(f"{path} holds arrays {sorted(names)}; expected X_train, y_train "
                    "(and X_test, y_test) or X (and y)")


def load_dataset(source: str, label_column: Optional[int] = None) -> Dataset:
    """Load a dataset from a bundled name (``"digits"``) or a file.

    Parameters
    ----------
    source : str
        ``"digits"`` (bundled), or a path to ``.npz`` (``X_train, y_train, X_test, y_test``,
        or ``X, y``), ``.npy`` (features only) or ``.csv`` (numbers; labels in the last
        column unless ``label_column`` says otherwise).
    label_column : int, optional

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        If the file is absent, too large, damaged, or holds the wrong arrays.
    """
    path, ext = resolve(source)
    if ext == ".npz":
        return _load_npz(path)
    if ext == ".npy":
        return Dataset(features(read_npy(path), path, "array"), None, None, None,
                       os.path.basename(path))
    if ext in CSV_EXTENSIONS:
        csv = CsvReader(path, label_column)
        return Dataset(features(csv.read_all(), path, "features"), csv.labels, None, None,
                       os.path.basename(path))
    raise DataError(f"{path}: unknown data format {ext!r}; use .npz, .npy or .csv")
