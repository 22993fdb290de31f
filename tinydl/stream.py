"""Read a training stream in chunks without loading the file: the data side of ``tinydl fit``.

* ``.npy``: memory-mapped (labels from a second ``.npy``);
* ``.npz``: members ``X_train``/``y_train`` (or ``X``/``y``, or ``X_test``/``y_test`` with
  ``split="test"``); a member stored uncompressed is memory-mapped in place, a compressed
  one is read whole (``np.savez`` stores, ``np.savez_compressed`` deflates);
* ``.csv``: features then the label in the last column (or ``label_column``), read a chunk
  of lines at a time; a first line that does not parse as numbers is a header.

Only the labels are read whole (to know the classes before the first chunk).  Every chunk
is checked (finite, numeric) before it is used, and :meth:`Stream.validate` checks the whole
file up front so that a bad row stops a run before anything is learned.
"""
from __future__ import annotations

import io
import itertools
import os
import struct
import zipfile
import zlib
from typing import Iterator, Optional, Tuple

import numpy as np

from .io import check_npy_file, check_npz, read_npy_header

__all__ = ["Stream", "open_stream"]

_KEYS = {"train": (("X_train", "y_train"), ("X", "y")),
         "test": (("X_test", "y_test"), ("X", "y")),
         "any": (("X_test", "y_test"), ("X", "y"), ("X_train", "y_train"))}


class Stream:
    """Rows of a data file, read ``chunk`` rows at a time.

    Attributes
    ----------
    path : str
    n_samples, n_features : int
    y : ndarray of shape (n_samples,) or None
        The labels (read whole: they are small).
    """

    def __init__(self, path, X, y, csv_opts=None):
        self.path = path
        self._X = X                  # array-like (memmap or ndarray) or None for CSV
        self._csv = csv_opts
        self.y = y
        if X is not None:
            self.n_samples, self.n_features = int(X.shape[0]), int(X.shape[1])
        else:
            self.n_samples, self.n_features = csv_opts["n"], csv_opts["m"]

    def chunks(self, size: int, start: int = 0, stop: Optional[int] = None,
               dtype="float32") -> Iterator[Tuple[int, np.ndarray, Optional[np.ndarray]]]:
        """Yield ``(first_row, X_chunk, y_chunk)`` for rows ``start`` to ``stop``.

        ``X_chunk`` is a fresh ``dtype`` array of shape (rows, n_features); a non-finite
        value raises ``ValueError`` naming its row and column.
        """
        stop = self.n_samples if stop is None else min(int(stop), self.n_samples)
        if self._X is not None:
            for s in range(int(start), stop, int(size)):
                e = min(stop, s + int(size))
                X = np.array(self._X[s:e], dtype=dtype)
                _check_finite(X, s, self.path)
                yield s, X, None if self.y is None else self.y[s:e]
            return
        for s, X in self._csv_chunks(size, start, stop, dtype):
            yield s, X, None if self.y is None else self.y[s:s + len(X)]

    def validate(self, size: int = 256, dtype="float32") -> None:
        """Check every row (finite numbers) before anything is learned, ``size`` rows at a
        time (the memory of one chunk of the stream)."""
        for _ in self.chunks(size, dtype=dtype):
            pass

    def _csv_chunks(self, size, start, stop, dtype):
        o = self._csv
        with open(self.path, "r", encoding="utf-8", errors="strict") as fh:
            lines = (ln for ln in fh if ln.strip())
            if o["header"]:
                next(lines, None)
            lines = itertools.islice(lines, start, stop)
            row = start
            while row < stop:
                block = list(itertools.islice(lines, min(size, stop - row)))
                if not block:
                    break
                arr = _parse_csv(block, o["m"] + 1, row, self.path, o["header"])
                feats = np.delete(arr, o["label_column"], axis=1).astype(dtype)
                _check_finite(feats, row, self.path)
                yield row, feats
                row += len(block)


def _check_finite(X, first_row, path):
    bad = ~np.isfinite(X)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{path}: row {first_row + int(r)}, column {int(c)} is "
                         f"{X[r, c]} (features must be finite numbers)")


def _parse_csv(lines, width, first_row, path, header):
    try:
        arr = np.loadtxt(io.StringIO("".join(lines)), delimiter=",", ndmin=2)
    except ValueError as exc:
        raise ValueError(f"{path}: cannot parse rows {first_row + int(header) + 1}-"
                         f"{first_row + len(lines) + int(header)} as numbers: {exc}") from None
    if arr.shape[1] != width:
        raise ValueError(f"{path}: rows from {first_row} have {arr.shape[1]} columns, the "
                         f"file's first row has {width}")
    return arr


def _labels(y, n, path, key):
    from .data import DataError, _as_labels
    y = _as_labels(y, n, path, key)
    if y.dtype.kind not in "iub":  # text labels load for the data API, not for a stream
        raise DataError(f"{path}: {key} must hold integer class labels, got dtype {y.dtype}")
    return y


def _features_ok(X, path, key):
    if X.ndim != 2:
        raise ValueError(f"{path}: {key} must be 2-D (samples, features), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{path}: {key} is empty (shape {X.shape})")
    if X.dtype.kind not in "fiu":
        raise ValueError(f"{path}: {key} must hold numbers, got dtype {X.dtype}")
    return X


def _npz_member(path, zf: zipfile.ZipFile, name: str):
    """Memory-map an uncompressed .npy member of a zip; read a compressed one whole."""
    info = zf.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        with zf.open(name) as fh:
            return np.lib.format.read_array(fh, allow_pickle=False)
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise ValueError(f"{path}: corrupt zip entry {name}")
        n_name, n_extra = struct.unpack("<HH", local[26:30])
        fh.seek(info.header_offset + 30 + n_name + n_extra)
        # check_npz has parsed every member's header already; this finds where the data
        # starts (a damaged or pickled member still fails here, typed)
        shape, fortran, dtype, n_bytes = read_npy_header(fh, f"{path}: {name}")
        offset = fh.tell()
    if offset + n_bytes > os.path.getsize(path):
        raise ValueError(f"{path}: {name} is truncated ({shape} {dtype} needs {n_bytes} "
                         "bytes past its header)")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape),
                     order="F" if fortran else "C")


def open_stream(path, split: str = "train", labels: Optional[str] = None,
                label_column: Optional[int] = None, need_labels: bool = True) -> Stream:
    """Open a data file for chunked reading.

    Parameters
    ----------
    path : str
        ``.npz``, ``.npy`` or ``.csv``, or the name of a bundled dataset (``digits``).
    split : {"train", "test", "any"}
        Which members of an ``.npz`` to read (``any``: the test split, else ``X``, else the
        training split).
    labels : str, optional
        A ``.npy`` of labels for a ``.npy`` of features.
    label_column : int, optional
        The CSV column holding the label (default: the last).
    need_labels : bool
        Refuse a file without labels.

    Raises
    ------
    OSError
        The file is missing or unreadable.
    ValueError
        Wrong keys, shapes, dtypes; a corrupt file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        from .data import BUNDLED, bundled_path
        if path in BUNDLED:  # a bundled dataset by name, e.g. "digits"
            path = bundled_path(path)
        else:
            raise FileNotFoundError(f"no such data file: {path}")
    ext = os.path.splitext(path)[1].lower()
    y = None
    if ext == ".npz":
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ValueError(f"{path} is not a readable .npz: {exc}") from None
        with zf:
            from .data import MAX_DATA_BYTES
            try:  # every member's declared size, before anything is mapped or allocated
                check_npz(zf, path, MAX_DATA_BYTES)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                raise ValueError(f"{path}: corrupt or truncated: {exc}") from None
            names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
            for xk, yk in _KEYS[split]:
                if xk in names:
                    break
            else:
                raise ValueError(f"{path} has keys {sorted(names)}; expected "
                                 f"{' or '.join(k for k, _ in _KEYS[split])} (features) "
                                 f"with {' or '.join(k for _, k in _KEYS[split])} (labels)")
            try:
                X = _features_ok(_npz_member(path, zf, xk + ".npy"), path, xk)
                if yk in names:
                    y = _labels(_npz_member(path, zf, yk + ".npy"), X.shape[0], path, yk)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                raise ValueError(f"{path}: corrupt or truncated: {exc}") from None
        if y is None and need_labels:
            raise ValueError(f"{path} has {xk} but no {yk}: labels are needed")
        return Stream(path, X, y)
    if ext == ".npy":
        try:
            check_npy_file(path)  # the declared shape against the file's size
            X = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{path} is not a readable .npy: {exc}") from None
        X = _features_ok(X, path, "the array")
        if labels is not None:
            try:
                check_npy_file(labels)
                yy = np.load(labels, allow_pickle=False)
            except ValueError as exc:
                raise ValueError(f"{labels} is not a readable .npy: {exc}") from None
            y = _labels(yy, X.shape[0], labels, "labels")
        elif need_labels:
            raise ValueError(f"{path} holds features only: give the labels as a .npy "
                             "(--labels)")
        return Stream(path, X, y)
    if ext == ".csv":
        return _open_csv(path, label_column)
    raise ValueError(f"{path}: unsupported data format {ext or '(none)'}; use .npz, .npy "
                     "or .csv")


def _open_csv(path, label_column):
    # one pass for the shape, the header and the labels (the features are read later)
    n, width, header, labels = 0, None, False, []
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        for ln in fh:
            if not ln.strip():
                continue
            cells = ln.rstrip("\n").split(",")
            if width is None:
                width = len(cells)
                try:
                    [float(c) for c in cells]
                except ValueError:
                    header = True
                    continue
            if len(cells) != width:
                raise ValueError(f"{path}: row {n} has {len(cells)} columns, the first has "
                                 f"{width}")
            col = width - 1 if label_column is None else int(label_column)
            if not -width <= col < width:
                raise ValueError(f"{path}: label column {label_column} is outside its "
                                 f"{width} columns")
            labels.append(cells[col])
            n += 1
    if width is None or n == 0:
        raise ValueError(f"{path} holds no data rows")
    if width < 2:
        raise ValueError(f"{path} has 1 column: need features and a label")
    col = width - 1 if label_column is None else int(label_column) % width
    try:
        yf = np.array([float(v) for v in labels])
    except ValueError as exc:
        raise ValueError(f"{path}: label column {col} is not numeric: {exc}") from None
    y = _labels(yf, n, path, f"column {col}")
    return Stream(path, None, y, dict(n=n, m=width - 1, header=header, label_column=col))
