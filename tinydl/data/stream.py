"""Read a training stream in chunks without loading the file: the data side of ``tinydl fit``.

* ``.npy``: memory-mapped (labels from a second ``.npy``);
* ``.npz``: members ``X_train``/``y_train`` (or ``X``/``y``, or ``X_test``/``y_test`` with
  ``split="test"``), memory-mapped where stored uncompressed;
* ``.csv``: features then the label in the last column (or ``label_column``), read a block
  of lines at a time; a first line that does not parse as numbers is a header.

The readers are :mod:`tinydl.data.files`'s, the same that load whole files.  Only the labels
are read whole (to know the classes before the first chunk).  Every chunk is checked (finite,
numeric) as it is read, and :meth:`Stream.validate` checks the whole file up front so that a
bad row stops a run before anything is learned.  Errors are :class:`~tinydl.errors.DataError`.
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

import numpy as np

from ..errors import DataError
from .files import (
    CSV_EXTENSIONS,
    CsvReader,
    NpzReader,
    as_features,
    as_labels,
    check_finite,
    read_npy,
    resolve,
)

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

    def __init__(self, path, X, y, csv: Optional[CsvReader] = None):
        self.path = path
        self._X = X                  # array-like (memmap or ndarray), or None for CSV
        self._csv = csv
        self.y = y
        src = X if X is not None else None
        if src is not None:
            self.n_samples, self.n_features = int(X.shape[0]), int(X.shape[1])
        else:
            self.n_samples, self.n_features = csv.n_samples, csv.n_features

    def chunks(self, size: int, start: int = 0, stop: Optional[int] = None, dtype="float32",
               check: bool = True) -> Iterator[Tuple[int, np.ndarray, Optional[np.ndarray]]]:
        """Yield ``(first_row, X_chunk, y_chunk)`` for rows ``start`` to ``stop``.

        Parameters
        ----------
        size : int
        start, stop : int
        dtype : {"float32", "float64"}
        check : bool, default=True
            Check each chunk for NaN and Inf.  ``False`` where :meth:`validate` has checked
            these rows already and the consumer validates its input anyway (``tinydl fit``:
            the learner checks every chunk once).

        Yields
        ------
        first_row : int
        X_chunk : ndarray of shape (rows, n_features), a fresh ``dtype`` array
        y_chunk : ndarray of shape (rows,) or None

        Raises
        ------
        DataError
            For a non-finite value (naming its row and column).
        """
        stop = self.n_samples if stop is None else min(int(stop), self.n_samples)
        if self._X is not None:
            for s in range(int(start), stop, int(size)):
                e = min(stop, s + int(size))
                X = np.array(self._X[s:e], dtype=dtype)
                if check:
                    check_finite(X, self.path, first_row=s)
                yield s, X, None if self.y is None else self.y[s:e]
            return
        for s, X in self._csv.chunks(size, start, stop, dtype, check):
            yield s, X, None if self.y is None else self.y[s:s + len(X)]

    def validate(self, size: int = 256, dtype="float32", start: int = 0,
                 stop: Optional[int] = None) -> None:
        """Check rows ``start`` to ``stop`` (finite numbers) before anything is learned,
        ``size`` rows at a time (the memory of one chunk of the stream).

        Raises
        ------
        DataError
            Naming the first bad value's row and column in the file.
        """
        for _ in self.chunks(size, start, stop, dtype=dtype):
            pass


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

    Returns
    -------
    Stream

    Raises
    ------
    DataError
        The file is missing, damaged, or holds the wrong keys, shapes or dtypes.
    """
    path, ext = resolve(path)
    y = None
    if ext == ".npz":
        npz = NpzReader(path)
        for xk, yk in _KEYS[split]:
            if xk in npz.names:
                break
        else:
            raise DataError(f"{path} has keys {sorted(npz.names)}; expected "
                            f"{' or '.join(k for k, _ in _KEYS[split])} (features) "
                            f"with {' or '.join(k for _, k in _KEYS[split])} (labels)")
        X = as_features(npz.member(xk), path, xk, flatten=False)
        if yk in npz.names:
            y = as_labels(npz.member(yk), X.shape[0], path, yk, integer_only=True)
        elif need_labels:
            raise DataError(f"{path} has {xk} but no {yk}: labels are needed")
        return Stream(path, X, y)
    if ext == ".npy":
        X = as_features(read_npy(path), path, "the array", flatten=False)
        if labels is not None:
            y = as_labels(read_npy(labels), X.shape[0], labels, "labels", integer_only=True)
        elif need_labels:
            raise DataError(f"{path} holds features only: give the labels as a .npy "
                            "(--labels)")
        return Stream(path, X, y)
    if ext in CSV_EXTENSIONS:
        csv = CsvReader(path, label_column)
        return Stream(path, None, csv.labels, csv)
    raise DataError(f"{path}: unknown data format {ext or '(none)'!r}; use .npz, .npy or "
                    ".csv")
