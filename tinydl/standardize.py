"""Per-feature standardization fixed from the head of a stream: the one hold-back buffer.

A stream cannot be standardized before its statistics exist: :class:`Standardizer` holds the
first ``n_standardize`` rows (and their labels, if any), fixes a mean and a standard deviation
from them, then releases them standardized, and standardizes every later row on arrival.  At
the end of a stream shorter than ``n_standardize``, :meth:`Standardizer.flush` fixes the
statistics from the rows held.  :func:`fit_stats` and :func:`apply_stats` are the arithmetic
(also used by :class:`tinydl.transform.StreamingDictionary`'s own ``standardize=True``), so
that the two give the same bits.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from ._validation import check_int
from .errors import ModelFileError

__all__ = ["Standardizer", "fit_stats", "fit_stats_rows", "apply_stats", "apply_stats_inplace",
           "N_STANDARDIZE"]

#: rows that fix the statistics (the transform's default ``n_standardize``)
N_STANDARDIZE = 256
#: rows gathered at a time into :func:`fit_stats_rows`'s float64 block
_GATHER_ROWS = 16


def fit_stats(S: np.ndarray, dtype) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and scale of the rows of ``S``.

    Parameters
    ----------
    S : ndarray of shape (n_rows, n_features)
    dtype : float32 or float64
        The dtype of the returned statistics.

    Returns
    -------
    mean, scale : ndarray of shape (n_features,)
        Computed in float64 whatever ``dtype`` (float32 sums over many rows lose digits);
        constant features (up to the rounding of their mean) get scale 1, so they are only
        centred.
    """
    dtype = np.dtype(dtype)
    mean = S.mean(axis=0, dtype=np.float64)
    std = S.std(axis=0, dtype=np.float64)
    const = std <= 16 * np.finfo(dtype).eps * np.maximum(np.abs(mean), 1e-300)
    std[const] = 1.0
    return mean.astype(dtype), std.astype(dtype)


def fit_stats_rows(S: np.ndarray, rows: np.ndarray, dtype,
                   block: int = N_STANDARDIZE) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`fit_stats` of ``S[rows]``, a block of rows at a time (two passes), so that the
    transient is ``block`` rows in float64 rather than a copy of all of them; the same rule
    for constant features.  (Summed block by block, the digits may differ from
    :func:`fit_stats`'s in the last place.)"""
    dtype = np.dtype(dtype)
    n = len(rows)
    total = np.zeros(S.shape[1], np.float64)
    for s in range(0, n, block):
        total += S[rows[s:s + block]].sum(axis=0, dtype=np.float64)
    mean = total / n
    sq = np.zeros(S.shape[1], np.float64)
    # the float64 deviations of a block, filled a few rows at a time (float64(x) - mean, the
    # bits of astype then subtract) so that no float32 copy of the block lives beside them
    dev = np.empty((min(block, n), S.shape[1]), np.float64)
    for s in range(0, n, block):
        r = rows[s:s + block]
        d = dev[:len(r)]
        for i in range(0, len(r), _GATHER_ROWS):
            np.subtract(S[r[i:i + _GATHER_ROWS]], mean, out=d[i:i + _GATHER_ROWS])
        sq += np.einsum("ij,ij->j", d, d)
    del dev
    std = np.sqrt(sq / n)
    const = std <= 16 * np.finfo(dtype).eps * np.maximum(np.abs(mean), 1e-300)
    std[const] = 1.0
    return mean.astype(dtype), std.astype(dtype)


def apply_stats_inplace(X: np.ndarray, mean: Optional[np.ndarray],
                        scale: Optional[np.ndarray]) -> np.ndarray:
    """:func:`apply_stats` written into ``X`` itself (the same bits), returned; for rows the
    caller owns (a gathered copy)."""
    if mean is None:
        return X
    X -= mean
    X /= scale
    return X


def apply_stats(X: np.ndarray, mean: Optional[np.ndarray],
                scale: Optional[np.ndarray]) -> np.ndarray:
    """``(X - mean) / scale`` in ``X``'s dtype, as a new array (``X`` itself if ``mean`` is
    None).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    mean, scale : ndarray of shape (n_features,) or None

    Returns
    -------
    ndarray of shape (n_samples, n_features)
    """
    if mean is None:
        return X
    out = X - mean
    out /= scale
    return out


class Standardizer:
    """Hold the first ``n_standardize`` rows of a stream, fix mean and scale, standardize.

    Parameters
    ----------
    n_features : int
    n_standardize : int, default=256
        Rows that fix the statistics.
    dtype : {"float32", "float64"}
    enabled : bool, default=True
        ``False``: a pass-through (rows are released as they arrive, unchanged).

    Attributes
    ----------
    mean_, scale_ : ndarray of shape (n_features,) or None
        None until the statistics are fixed (always None when disabled).
    n_pending : int
        Rows held back, waiting for the statistics.
    """

    def __init__(self, n_features: int, n_standardize: int = N_STANDARDIZE,
                 dtype="float32", enabled: bool = True):
        self.n_features = check_int(n_features, "n_features", low=1)
        self.n_standardize = check_int(n_standardize, "n_standardize", low=1)
        self.dtype = np.dtype(dtype)
        self.enabled = bool(enabled)
        self.mean_ = self.scale_ = None
        self._rows = np.zeros((0, self.n_features), self.dtype)
        self._labels = np.zeros(0, np.int64)

    @property
    def ready(self) -> bool:
        """True once rows are released as they arrive (statistics fixed, or disabled)."""
        return not self.enabled or self.mean_ is not None

    @property
    def n_pending(self) -> int:
        """Rows held back, waiting for the statistics."""
        return int(len(self._rows))

    @property
    def pending(self) -> Tuple[np.ndarray, np.ndarray]:
        """The rows and labels held back (raw), shapes (n_pending, n_features) and
        (n_pending,)."""
        return self._rows, self._labels

    def push(self, X: np.ndarray, y: Optional[np.ndarray] = None):
        """Take validated rows; return those released, standardized.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features), finite, in ``dtype``
            Already validated by the caller (nothing is checked again here).
        y : ndarray of shape (n_samples,), optional
            Labels that travel with the rows.

        Returns
        -------
        (X_std, y) : ndarray of shape (n_released, n_features) and its labels, or None
            None while the rows are held back (fewer than ``n_standardize`` so far).
        """
        if y is None:
            y = np.zeros(len(X), np.int64)
        if self.ready:
            return apply_stats(X, self.mean_, self.scale_), y
        if len(self._rows):
            X = np.concatenate([self._rows, X])
            y = np.concatenate([self._labels, y])
        if len(X) < self.n_standardize:
            # a copy: the caller may reuse its buffer for the next chunk
            self._rows, self._labels = np.array(X), np.array(y)
            return None
        return self._release(X, y, self.n_standardize)

    def flush(self):
        """End of the stream: fix the statistics from the rows held (fewer than
        ``n_standardize``) and release them.

        Returns
        -------
        (X_std, y) or None
            None when nothing is held.
        """
        if not len(self._rows):
            return None
        return self._release(self._rows, self._labels, len(self._rows))

    def _release(self, X, y, n_stats):
        self.mean_, self.scale_ = fit_stats(X[:n_stats], self.dtype)
        # fresh empty arrays: an empty view would keep the held rows' memory alive
        self._rows = np.zeros((0, self.n_features), self.dtype)
        self._labels = np.zeros(0, np.int64)
        return apply_stats(X, self.mean_, self.scale_), y

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Standardize validated rows with the fixed statistics.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_features)
            A new array, or ``X`` itself when disabled.

        Raises
        ------
        NotFittedError
            If the statistics are not fixed yet.
        """
        if not self.ready:
            from .errors import not_fitted_error
            raise not_fitted_error(
                f"standardization: only {self.n_pending} of n_standardize="
                f"{self.n_standardize} samples have arrived, so the statistics are not "
                "fixed yet (call finish() at the end of a short stream)")
        return apply_stats(X, self.mean_, self.scale_)

    def transform_inplace(self, X: np.ndarray) -> np.ndarray:
        """:meth:`transform` written into ``X`` (rows the caller owns, in ``dtype``): the
        same bits without a second array."""
        if not self.ready:
            return self.transform(X)  # raises
        return apply_stats_inplace(X, self.mean_, self.scale_)

    # -- state (what a checkpoint stores) ----------------------------------------------------
    def state(self) -> Dict[str, np.ndarray]:
        """The arrays that restore this standardizer exactly (see :meth:`from_state`)."""
        out = {"std_pending_X": self._rows, "std_pending_y": self._labels,
               "std_has_stats": np.int64(self.mean_ is not None)}
        if self.mean_ is not None:
            out["std_mean"], out["std_scale"] = self.mean_, self.scale_
        return out

    @classmethod
    def from_state(cls, arrays, n_features, n_standardize, dtype, enabled, where="file"):
        """Rebuild a standardizer from :meth:`state`'s arrays.

        Raises
        ------
        ModelFileError
            If an array has the wrong shape or dtype.
        """
        self = cls(n_features, n_standardize, dtype, enabled)
        X, y = arrays["std_pending_X"], arrays["std_pending_y"]
        most = n_standardize - 1 if enabled else 0
        if X.ndim != 2 or X.shape[1] != n_features or X.dtype != self.dtype \
                or len(X) > most or y.shape != (len(X),):
            raise ModelFileError(f"{where}: held-back rows have shape {X.shape} {X.dtype} "
                                 f"and labels {y.shape}, expected (< {n_standardize}, "
                                 f"{n_features}) {self.dtype}")
        self._rows, self._labels = X, y
        if int(arrays["std_has_stats"]):
            mean, scale = arrays["std_mean"], arrays["std_scale"]
            for name, a in (("mean", mean), ("scale", scale)):
                if a.shape != (n_features,) or a.dtype != self.dtype:
                    raise ModelFileError(f"{where}: standardization {name} has shape "
                                         f"{a.shape} {a.dtype}, expected ({n_features},) "
                                         f"{self.dtype}")
            self.mean_, self.scale_ = mean, scale
        return self
