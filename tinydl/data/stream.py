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

:meth:`Stream.shuffled` streams a finite file in a seeded permuted order (for files that are
not live streams: a file in recorded order, labels in long blocks, is not what a streaming
learner should see as "the stream"); each chunk reads its rows by the permuted index, so memory
stays one chunk (a memory-mapped file is read row by row, sorted within the chunk).
:func:`label_runs` measures how blocked the labels are (``tinydl fit``'s warning).

A documented preprocessing is applied by a rule on the data, never on the file name, so that
``tinydl fit``, ``evaluate`` and ``predict`` see the features ``tinydl.data.load_real`` gives
(:func:`detect_preprocessing`): integer features of 520 columns whose every value is 100 or lies
in -110..0 are UJIIndoorLoc RSSI readings (100 = "not detected") and are mapped chunk by chunk
with :func:`~tinydl.data.datasets.uji_rssi_to_features` (``Stream.preprocessing ==
"uji-rssi"``); fed as stored, "not detected" would be the strongest signal.
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

__all__ = ["Stream", "open_stream", "label_runs", "detect_preprocessing", "BLOCKED_RUN_FACTOR",
           "PREPROCESSINGS"]

#: the preprocessings a stream may apply (see :func:`detect_preprocessing`)
PREPROCESSINGS = ("none", "uji-rssi")


def detect_preprocessing(X, block: int = 256) -> str:
    """The documented preprocessing the values of ``X`` call for.

    Rule: ``"uji-rssi"`` for integer features of 520 columns whose every value is 100 ("not
    detected") or lies in -110..0 dBm, with at least one 100 (UJIIndoorLoc's RSSI coding, see
    ``shared/data/README.md``); ``"none"`` otherwise.  Read ``block`` rows at a time.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)

    Returns
    -------
    str
        One of :data:`PREPROCESSINGS`.
    """
    from .datasets import UJI_N_WAPS, UJI_NO_SIGNAL
    if X is None or X.ndim != 2 or X.shape[1] != UJI_N_WAPS or X.dtype.kind not in "iu":
        return "none"
    seen_missing = False
    for s in range(0, X.shape[0], block):
        W = np.asarray(X[s:s + block])
        missing = W == UJI_NO_SIGNAL
        if not (missing | ((W >= -110) & (W <= 0))).all():
            return "none"
        seen_missing = seen_missing or bool(missing.any())
    return "uji-rssi" if seen_missing else "none"


def _convert(name, X, dtype, path):
    """``X`` (a chunk as stored) after the preprocessing ``name``, as ``dtype``."""
    if name == "uji-rssi":
        return _uji_convert(X, dtype, path)
    return np.asarray(X, dtype=dtype)


def _uji_convert(X, dtype, path):
    """:func:`~tinydl.data.datasets.uji_rssi_to_features` of an integer chunk, computed in
    float32 in place of one output array: the same bits (``(rssi + 105) / 105`` of integers
    is correctly rounded either way: such a quotient is never within float64's rounding of a
    float32 midpoint), without its float64 temporaries (three chunk-sized float64 arrays: at
    two rows of 520 features, 34 KB beside a 256 KiB learner)."""
    from .datasets import UJI_FLOOR_DBM, UJI_NO_SIGNAL, uji_rssi_to_features, uji_valid_readings
    W = np.asarray(X)
    if W.dtype.kind not in "iu":
        return uji_rssi_to_features(W, path).astype(dtype, copy=False)
    if not uji_valid_readings(W).all():
        return uji_rssi_to_features(W, path)  # raises, naming the first bad reading
    missing = W == UJI_NO_SIGNAL
    out = W.astype(np.float32)  # the features are float32 (as the reference gives them)
    out[missing] = UJI_FLOOR_DBM
    out -= UJI_FLOOR_DBM
    out /= -UJI_FLOOR_DBM
    return out.astype(dtype, copy=False)

#: labels "arrive in blocks" when their mean run length exceeds this many times that of the
#: same labels shuffled
BLOCKED_RUN_FACTOR = 8

_KEYS = {"train": (("X_train", "y_train"), ("X", "y")),
         "test": (("X_test", "y_test"), ("X", "y")),
         "any": (("X_test", "y_test"), ("X", "y"), ("X_train", "y_train"))}


class Stream:
    """Rows of a data file, read ``chunk`` rows at a time.

    Attributes
    ----------
    path : str
    n_samples, n_features : int
    preprocessing : str
        What :meth:`chunks` applies to the stored values (:func:`detect_preprocessing`).
    y : ndarray of shape (n_samples,) or None
        The labels (read whole: they are small).
    """

    def __init__(self, path, X, y, csv: Optional[CsvReader] = None,
                 preprocessing: Optional[str] = None):
        self.path = path
        self._X = X                  # array-like (memmap or ndarray), or None for CSV
        self._csv = csv
        self.y = y
        self.order = None            # a permutation of the rows (shuffled), or None
        self.shuffle_seed = None
        # the documented preprocessing the data calls for (detect_preprocessing)
        if preprocessing is None:
            preprocessing = detect_preprocessing(X) if X is not None else "none"
        self.preprocessing = preprocessing
        src = X if X is not None else None
        if src is not None:
            self.n_samples, self.n_features = int(X.shape[0]), int(X.shape[1])
        else:
            self.n_samples, self.n_features = csv.n_samples, csv.n_features

    @property
    def resident_bytes(self) -> int:
        """Bytes of the file held in memory (a deflated ``.npz`` member is read whole; a
        memory-mapped one is not counted), labels and permutation included."""
        n = 0 if self._X is None or isinstance(self._X, np.memmap) else int(self._X.nbytes)
        for a in (self.y, self.order):
            n += 0 if a is None else int(np.asarray(a).nbytes)
        return n

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
        if self.order is not None:
            for s in range(int(start), stop, int(size)):
                e = min(stop, s + int(size))
                idx = self.order[s:e]
                srt = np.argsort(idx, kind="stable")
                stored = self.preprocessing == "none"
                X = np.empty((e - s,) + tuple(self._X.shape[1:]),
                             dtype if stored else self._X.dtype)
                X[srt] = self._X[idx[srt]]   # rows read in file order, placed in stream order
                if not stored:
                    X = _convert(self.preprocessing, X, dtype, self.path)
                if check and not np.isfinite(X).all():
                    for r in range(len(X)):  # name the bad row by its row in the file
                        check_finite(X[r:r + 1], self.path, first_row=int(idx[r]))
                yield s, X, None if self.y is None else self.y[s:e]
            return
        if self._X is not None:
            for s in range(int(start), stop, int(size)):
                e = min(stop, s + int(size))
                if self.preprocessing == "none":
                    X = np.array(self._X[s:e], dtype=dtype)
                else:
                    X = _convert(self.preprocessing, self._X[s:e], dtype, self.path)
                if check:
                    check_finite(X, self.path, first_row=s)
                yield s, X, None if self.y is None else self.y[s:e]
            return
        for s, X in self._csv.chunks(size, start, stop, dtype, check):
            yield s, X, None if self.y is None else self.y[s:s + len(X)]

    def shuffled(self, seed: int) -> "Stream":
        """This file's rows in the order ``numpy.random.default_rng(seed).permutation``
        (``y`` permuted too); ``first_row`` of :meth:`chunks` then counts stream positions.

        Raises
        ------
        DataError
            For a CSV file (read a block of lines at a time, it has no random access:
            convert it to ``.npy`` first).
        """
        if self._X is None:
            raise DataError(f"{self.path}: a CSV file cannot be streamed shuffled (no random "
                            "access to its rows); convert it to .npy or .npz first")
        out = Stream(self.path, self._X, self.y, preprocessing=self.preprocessing)
        out.order = np.random.default_rng(int(seed)).permutation(self.n_samples)
        out.shuffle_seed = int(seed)
        if self.y is not None:
            out.y = self.y[out.order]
        return out

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


def label_runs(y, n_batch: int = 256):
    """How blocked a stream's labels are.

    Parameters
    ----------
    y : array-like of shape (n,)
        The labels in stream order.
    n_batch : int
        The block size for ``classes_per_batch``.

    Returns
    -------
    dict
        ``mean_run``: mean length of the runs of equal labels; ``shuffled_run``: its
        expectation for the same labels in random order, ``1 / (1 - sum_c p_c**2)``;
        ``classes_per_batch``: mean number of classes in an ``n_batch`` block (over the full
        blocks; the whole stream when shorter); ``n_classes``; ``blocked``: ``mean_run >
        BLOCKED_RUN_FACTOR * shuffled_run``.  Measured: Daily and Sports sorted by activity
        96 vs 1.06 (91x), UJIIndoorLoc in file order 16.3 vs 1.09 (15x), shuffled streams
        about 1x.
    """
    y = np.asarray(y)
    n = len(y)
    if n == 0:
        return dict(mean_run=0.0, shuffled_run=0.0, classes_per_batch=0.0, n_classes=0,
                    blocked=False)
    runs = 1 + int(np.count_nonzero(y[1:] != y[:-1]))
    _, counts = np.unique(y, return_counts=True)
    p = counts / n
    same = float((p ** 2).sum())
    shuffled_run = 1.0 / (1.0 - same) if same < 1.0 else float(n)
    nb = max(1, min(int(n_batch), n))
    blocks = [len(np.unique(y[s:s + nb])) for s in range(0, n - nb + 1, nb)]
    mean_run = n / runs
    return dict(mean_run=mean_run, shuffled_run=shuffled_run,
                classes_per_batch=float(np.mean(blocks)), n_classes=int(len(counts)),
                blocked=bool(mean_run > BLOCKED_RUN_FACTOR * shuffled_run))


def _flat(arr, path, key):
    """A features array as rows: a sample of more axes (Daily and Sports' (125, 45) segments
    of time x channels) flattened in C order, as :func:`tinydl.data.load_real` gives it: a
    view of a mapped file, so a mapped one only in C order (a Fortran-ordered one would be
    copied whole into memory; one read into memory already, from a compressed ``.npz``, is
    copied)."""
    if getattr(arr, "ndim", 2) > 2 and isinstance(arr, np.memmap) \
            and not arr.flags.c_contiguous:
        raise DataError(f"{path}: {key} is {arr.ndim}-D (shape {arr.shape}) in Fortran order; "
                        "store it C-ordered, or as (n_samples, n_features)")
    return as_features(arr, path, key)


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
        X = _flat(npz.member(xk), path, xk)
        if yk in npz.names:
            y = as_labels(npz.member(yk), X.shape[0], path, yk, integer_only=True)
        elif need_labels:
            raise DataError(f"{path} has {xk} but no {yk}: labels are needed")
        return Stream(path, X, y)
    if ext == ".npy":
        X = _flat(read_npy(path), path, "the array")
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
