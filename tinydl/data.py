"""Datasets in: ``.npz``, ``.npy`` and CSV files, and the bundled real dataset.

Every loader returns a :class:`Dataset` of float arrays with samples as rows, and refuses
damaged input with a :class:`DataError` that names the file and the problem.  Files are read
with ``allow_pickle=False``; sizes are checked before anything large is allocated.
"""
from __future__ import annotations

import csv
import io
import os
import zipfile
from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["Dataset", "DataError", "load_dataset", "bundled_path", "BUNDLED"]

#: datasets shipped inside the package (name -> file under tinydl/datasets)
BUNDLED = {"digits": "digits.npz"}
#: refuse data files larger than this many bytes unless told otherwise
MAX_DATA_BYTES = int(os.environ.get("TINYDL_MAX_DATA_BYTES", 16 * 2 ** 30))


class DataError(ValueError):
    """A data file is missing, damaged, or does not hold what tinydl needs."""


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

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])


def bundled_path(name: str) -> str:
    """Path of a bundled dataset file (``"digits"``)."""
    if name not in BUNDLED:
        raise DataError(f"no bundled dataset {name!r}; bundled: {', '.join(BUNDLED)}")
    return os.path.join(os.path.dirname(__file__), "datasets", BUNDLED[name])


def _as_features(arr, path, key):
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{path}: {key} has dtype {arr.dtype}; expected numbers")
    if arr.ndim == 1:
        raise DataError(f"{path}: {key} is 1-D (shape {arr.shape}); expected (n_samples, "
                        "n_features)")
    if arr.ndim > 2:  # e.g. Daily and Sports: (n, 125, 45) time x channels
        arr = arr.reshape(arr.shape[0], -1)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{path}: {key} is empty (shape {arr.shape})")
    out = arr.astype(np.float32 if arr.dtype.itemsize <= 4 else np.float64, copy=False)
    if not np.isfinite(out).all():
        bad = int((~np.isfinite(out)).sum())
        raise DataError(f"{path}: {key} contains {bad} NaN or Inf value(s)")
    return out


def _as_labels(arr, n, path, key):
    arr = np.asarray(arr)
    if arr.ndim != 1:
        raise DataError(f"{path}: {key} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise DataError(f"{path}: {key} has {arr.shape[0]} labels for {n} samples")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise DataError(f"{path}: {key} holds non-integer labels")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "biuU":
        raise DataError(f"{path}: {key} has dtype {arr.dtype}; expected integer labels")
    return arr


def _load_npz(path):
    try:
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            if {"X_train", "y_train"} <= files:
                Xtr = _as_features(z["X_train"], path, "X_train")
                ytr = _as_labels(z["y_train"], len(Xtr), path, "y_train")
                Xte = yte = None
                if "X_test" in files:
                    Xte = _as_features(z["X_test"], path, "X_test")
                    if Xte.shape[1] != Xtr.shape[1]:
                        raise DataError(f"{path}: X_test has {Xte.shape[1]} features, X_train "
                                        f"{Xtr.shape[1]}")
                    if "y_test" not in files:
                        raise DataError(f"{path}: has X_test but no y_test")
                    yte = _as_labels(z["y_test"], len(Xte), path, "y_test")
                return Dataset(Xtr, ytr, Xte, yte, os.path.basename(path))
            if "X" in files:
                X = _as_features(z["X"], path, "X")
                y = _as_labels(z["y"], len(X), path, "y") if "y" in files else None
                return Dataset(X, y, None, None, os.path.basename(path))
            raise DataError(f"{path} holds arrays {sorted(files)}; expected X_train, y_train "
                            "(and X_test, y_test) or X (and y)")
    except DataError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path} is not a readable .npz file ({type(exc).__name__}: {exc})") \
            from None


def _load_npy(path):
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npy file ({exc})") from None
    return Dataset(_as_features(arr, path, "array"), None, None, None, os.path.basename(path))


def _load_csv(path, label_column):
    """CSV of numbers; the label column (default: the last) holds integer class labels.

    A header row is detected (a first row that does not parse as numbers) and skipped.
    """
    with open(path, "r", newline="") as fh:
        text = fh.read()
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{path} is empty")
    try:
        [float(c) for c in rows[0]]
    except ValueError:
        rows = rows[1:]
    if not rows:
        raise DataError(f"{path} has a header but no data rows")
    width = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != width:
            raise DataError(f"{path}: row {i + 1} has {len(r)} columns, the first has {width}")
    try:
        arr = np.array(rows, dtype=np.float64)
    except ValueError as exc:
        raise DataError(f"{path}: non-numeric value ({exc})") from None
    if width < 2:
        raise DataError(f"{path}: needs at least one feature column and a label column")
    col = label_column if label_column is not None else width - 1
    if not -width <= col < width:
        raise DataError(f"{path}: label column {col} is outside 0..{width - 1}")
    col %= width
    y = _as_labels(arr[:, col], len(arr), path, f"column {col}")
    X = _as_features(np.delete(arr, col, axis=1), path, "features")
    return Dataset(X, y, None, None, os.path.basename(path))


def load_dataset(source: str, label_column: Optional[int] = None) -> Dataset:
    """Load a dataset from a bundled name (``"digits"``) or a file.

    Parameters
    ----------
    source : str
        ``"digits"`` (bundled), or a path to ``.npz`` (``X_train, y_train, X_test, y_test``,
        or ``X, y``), ``.npy`` (features only) or ``.csv`` (numbers; labels in the last
        column unless ``label_column`` says otherwise).

    Raises
    ------
    DataError
        If the file is absent, too large, damaged, or holds the wrong arrays.
    """
    if source in BUNDLED:
        source = bundled_path(source)
    if not os.path.isfile(source):
        raise DataError(f"no such data file: {source}")
    size = os.path.getsize(source)
    if size > MAX_DATA_BYTES:
        raise DataError(f"{source} is {size} bytes, above the limit of {MAX_DATA_BYTES} "
                        "(set TINYDL_MAX_DATA_BYTES to raise it)")
    ext = os.path.splitext(source)[1].lower()
    if ext == ".npz":
        return _load_npz(source)
    if ext == ".npy":
        return _load_npy(source)
    if ext in (".csv", ".txt", ".data"):
        return _load_csv(source, label_column)
    raise DataError(f"{source}: unknown data format {ext!r}; use .npz, .npy or .csv")
