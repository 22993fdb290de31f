"""Standardization without a hold-back buffer: statistics from the running moments of the
stream's first rows (the learner's ``standardize="running"``).

:class:`tinydl.standardize.Standardizer` holds the first ``n_standardize`` rows back until their
statistics are fixed, then codes them: ``n_standardize x m`` values, plus the float64
deviations :func:`~tinydl.standardize.fit_stats` makes of them (Daily and Sports, m = 5625,
256 rows: 5.8 MB + 11.5 MB), more than a small memory budget holds.
:class:`RunningStandardizer` instead accumulates the count, the float64 mean and the float64
sum of squared deviations of the first ``n_standardize`` rows chunk by chunk (Chan's pairwise
update: ``2 m`` float64 values and one float32 chunk of scratch), and those *warm-up* rows are
used for the statistics only: they are not coded nor learned from.  Every later row is
standardized on arrival with the same arithmetic as :func:`~tinydl.standardize.apply_stats`.

The customizer (:func:`tinydl.customize.plan`) chooses this mode when the hold-back phase does
not fit the memory budget; the rule is stated in :mod:`tinydl.customize`.

:func:`make_standardizer` and :func:`standardizer_from_state` pick the class for the learner's
``standardize`` parameter (``True``: hold back; ``"running"``: this module; ``False``: off).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from ._validation import check_int
from .errors import ModelFileError
from .standardize import Standardizer, apply_stats, apply_stats_inplace

__all__ = ["RunningStandardizer", "make_standardizer", "standardizer_from_state",
           "STANDARDIZE_MODES"]

#: the learner's ``standardize`` values
STANDARDIZE_MODES = (True, False, "running")
#: the released moments (read-only: never written)
_EMPTY = np.zeros(0, np.float64)
_EMPTY.flags.writeable = False


def check_mode(standardize):
    """``standardize`` checked: True, False or ``"running"``.

    Raises
    ------
    ValueError
        For any other value.
    """
    if isinstance(standardize, (bool, np.bool_)):
        return bool(standardize)
    if standardize == "running":
        return "running"
    raise ValueError(f"standardize must be True, False or 'running', got {standardize!r}")


class RunningStandardizer:
    """Fix mean and scale from the running moments of the first ``n_standardize`` rows, which
    are consumed for the statistics only; standardize every later row.

    The interface is :class:`~tinydl.standardize.Standardizer`'s (``push``, ``flush``,
    ``transform``, ``transform_inplace``, ``state``, ``from_state``).

    Parameters
    ----------
    n_features : int
    n_standardize : int
        Warm-up rows the statistics come from.
    dtype : {"float32", "float64"}
    enabled : bool
        Always True here (a disabled standardizer is the plain pass-through).

    Attributes
    ----------
    mean_, scale_ : ndarray of shape (n_features,) or None
    n_pending : int
        Warm-up rows consumed (not released): where a resumed stream continues counts them.
    """

    def __init__(self, n_features: int, n_standardize: int, dtype="float32",
                 enabled: bool = True):
        self.n_features = check_int(n_features, "n_features", low=1)
        self.n_standardize = check_int(n_standardize, "n_standardize", low=1)
        self.dtype = np.dtype(dtype)
        self.enabled = True
        self.mean_ = self.scale_ = None
        self._n = 0
        self._mean = np.zeros(self.n_features, np.float64)
        self._m2 = np.zeros(self.n_features, np.float64)

    @property
    def ready(self) -> bool:
        """True once the statistics are fixed."""
        return self.mean_ is not None

    @property
    def n_pending(self) -> int:
        """Warm-up rows consumed for the statistics (never released)."""
        return int(self._n)

    @property
    def pending(self) -> Tuple[np.ndarray, np.ndarray]:
        """Nothing is held: empty rows and labels."""
        return np.zeros((0, self.n_features), self.dtype), np.zeros(0, np.int64)

    def _accumulate(self, X: np.ndarray) -> None:
        # Chan et al.'s pairwise update of (count, mean, M2): the chunk's own mean and squared
        # deviations (one float32-sized scratch array), merged in float64
        nb = len(X)
        if not nb:
            return
        mb = X.mean(axis=0, dtype=np.float64)
        d = X - mb.astype(X.dtype)
        np.square(d, out=d)
        m2b = d.sum(axis=0, dtype=np.float64)
        # the float32 rounding of the chunk mean: a per-feature correction (exact in float64)
        shift = mb - mb.astype(X.dtype).astype(np.float64)
        m2b -= nb * shift * shift
        del d
        na = self._n
        n = na + nb
        delta = mb - self._mean
        self._mean += delta * (nb / n)
        self._m2 += m2b + delta * delta * (na * nb / n)
        self._n = n

    def _fix(self) -> None:
        n = max(self._n, 1)
        std = np.sqrt(np.maximum(self._m2, 0.0) / n)
        mean = self._mean
        const = std <= 16 * np.finfo(self.dtype).eps * np.maximum(np.abs(mean), 1e-300)
        std[const] = 1.0
        self.mean_, self.scale_ = mean.astype(self.dtype), std.astype(self.dtype)
        # the moments have served: released, so that their 2 m float64 values are a
        # warm-up transient, not held beside the window and the network for the whole run
        self._mean = self._m2 = _EMPTY

    def push(self, X: np.ndarray, y: Optional[np.ndarray] = None):
        """Take validated rows; return those past the warm-up, standardized (or None).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features), finite, in ``dtype``
        y : ndarray of shape (n_samples,), optional

        Returns
        -------
        (X_std, y) or None
        """
        if y is None:
            y = np.zeros(len(X), np.int64)
        if not self.ready:
            take = min(self.n_standardize - self._n, len(X))
            self._accumulate(X[:take])
            if self._n < self.n_standardize:
                return None
            self._fix()
            X, y = X[take:], y[take:]
            if not len(X):
                return None
        return apply_stats(X, self.mean_, self.scale_), y

    def flush(self):
        """End of a stream shorter than the warm-up: fix the statistics from the rows seen.
        Nothing is released (the warm-up rows are not kept).  Returns None."""
        if not self.ready and self._n:
            self._fix()
        return None

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Standardize validated rows (a new array).

        Raises
        ------
        NotFittedError
            Before the statistics are fixed.
        """
        if not self.ready:
            from .errors import not_fitted_error
            raise not_fitted_error(
                f"standardization: only {self._n} of n_standardize={self.n_standardize} "
                "warm-up samples have arrived, so the statistics are not fixed yet")
        return apply_stats(X, self.mean_, self.scale_)

    def transform_inplace(self, X: np.ndarray) -> np.ndarray:
        """:meth:`transform` written into ``X``."""
        if not self.ready:
            return self.transform(X)  # raises
        return apply_stats_inplace(X, self.mean_, self.scale_)

    @property
    def nbytes(self) -> int:
        """Bytes of the running moments (none once the statistics are fixed)."""
        return int(self._mean.nbytes + self._m2.nbytes)

    # -- state ---------------------------------------------------------------------------
    def state(self) -> Dict[str, np.ndarray]:
        """The arrays that restore this standardizer exactly (the keys a learner checkpoint
        requires, empty held rows, and the running moments)."""
        out = {"std_pending_X": np.zeros((0, self.n_features), self.dtype),
               "std_pending_y": np.zeros(0, np.int64),
               "std_has_stats": np.int64(self.ready),
               "std_run_n": np.int64(self._n), "std_run_mean": self._mean,
               "std_run_m2": self._m2}
        if self.ready:
            out["std_mean"], out["std_scale"] = self.mean_, self.scale_
        return out

    @classmethod
    def from_state(cls, arrays, n_features, n_standardize, dtype, enabled=True,
                   where="file") -> "RunningStandardizer":
        """Rebuild from :meth:`state`'s arrays.

        Raises
        ------
        ModelFileError
            If an array is missing or has the wrong shape or dtype.
        """
        self = cls(n_features, n_standardize, dtype)
        for key in ("std_run_n", "std_run_mean", "std_run_m2"):
            if key not in arrays:
                raise ModelFileError(f"{where}: {key} is missing (a standardize='running' "
                                     "learner's running moments)")
        n = int(arrays["std_run_n"])
        if not 0 <= n <= n_standardize:
            raise ModelFileError(f"{where}: std_run_n={n} outside 0..{n_standardize}")
        ready = bool(int(arrays["std_has_stats"]))
        for key in ("std_run_mean", "std_run_m2"):
            a = arrays[key]
            # once the statistics are fixed the moments are released (saved empty)
            if a.dtype != np.float64 or a.shape not in ((n_features,),) + ((0,),) * ready:
                raise ModelFileError(f"{where}: {key} has {a.dtype} {a.shape}, expected "
                                     f"float64 ({n_features},)")
        self._n = n
        self._mean = np.array(arrays["std_run_mean"])
        self._m2 = np.array(arrays["std_run_m2"])
        if ready:
            self._mean = self._m2 = _EMPTY
            mean, scale = arrays["std_mean"], arrays["std_scale"]
            for name, a in (("mean", mean), ("scale", scale)):
                if a.shape != (n_features,) or a.dtype != self.dtype:
                    raise ModelFileError(f"{where}: standardization {name} has {a.dtype} "
                                         f"{a.shape}, expected {self.dtype} ({n_features},)")
            self.mean_, self.scale_ = np.array(mean), np.array(scale)
        return self


def make_standardizer(n_features: int, n_standardize: int, dtype, standardize):
    """The learner's standardizer for its ``standardize`` parameter."""
    mode = check_mode(standardize)
    if mode == "running":
        return RunningStandardizer(n_features, n_standardize, dtype)
    return Standardizer(n_features, n_standardize, dtype, enabled=mode)


def standardizer_from_state(arrays, n_features, n_standardize, dtype, standardize,
                            where="file"):
    """:func:`make_standardizer`'s class rebuilt from a checkpoint's arrays."""
    mode = check_mode(standardize)
    if mode == "running":
        return RunningStandardizer.from_state(arrays, n_features, n_standardize, dtype,
                                              where=where)
    return Standardizer.from_state(arrays, n_features, n_standardize, dtype, mode, where)
