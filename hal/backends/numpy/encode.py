"""The NumPy specification of the prepared encode: a dictionary bound once for repeated OMP
calls into caller-owned codes (the streaming transform's execution phase).

:meth:`hal.Backend.prepare_encode` (every backend but ``native`` uses this plan over its
own ``omp_encode``; the execution phase of ``blas``, ``mpi`` and ``multiprocessing`` uses the
native one where it builds, see :mod:`hal.execution`) binds the atoms, their Gram matrix,
``k``, ``tol`` and the optional standardization statistics; :meth:`EncodePlan.encode` then
checks that a batch is finite, standardizes it (``(x - mean) / scale``, the rounding of
:func:`tinydl.standardize.apply_stats`) and writes Batch-OMP's codes into the caller's
``indices`` and ``values``: the same bits as :meth:`~hal.backends.numpy.omp.BatchOMP.omp_encode`
on the standardized batch.  The native backend does all of it in one C call
(``hal/backends/native/correlate.c``, ``encode``).
"""
from __future__ import annotations

import numpy as np

__all__ = ["EncodePlan", "nonfinite_error"]


def nonfinite_error(X: np.ndarray, where: str = "") -> ValueError:
    """The error for a batch holding NaN or Inf: how many and the first index."""
    bad = ~np.isfinite(X)
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    return ValueError(f"{where}X contains {int(bad.sum())} NaN or Inf value(s); the first at "
                      f"index {first}")


class EncodePlan:
    """A dictionary bound for :meth:`encode` (see the module docstring).

    Parameters
    ----------
    backend : NumpyBackend
    D : ndarray of shape (l, m), C-contiguous
    G : ndarray of shape (l, l)
        ``D @ D.T``.
    k : int
        Non-zeros per code (``<= l``).
    tol : float or None
    mean, scale : ndarray of shape (m,) or None
        Standardization applied to every batch first.
    width : int
        Columns of the caller's outputs (``>= k``): entries past a code's non-zeros are
        ``-1`` / ``0``.
    """

    def __init__(self, backend, D, G, k, tol=None, mean=None, scale=None, width=None):
        self.backend, self.D, self.G = backend, D, G
        self.l, self.m = D.shape
        self.k = int(min(k, self.l))
        self.width = self.k if width is None else int(width)
        if self.width < self.k:
            raise ValueError(f"prepare_encode: width={self.width} is below k={self.k}")
        self.tol, self.mean, self.scale = tol, mean, scale
        self.dtype = D.dtype
        self._ws = backend.prepare_omp(getattr(backend, "batch", 256), self.m, self.l, self.k,
                                       self.dtype)
        self._ws.fixed_D = True  # D never changes for this plan: a backend's D.T copy once

    def scratch(self) -> list:
        """The workspace arrays free between calls (:meth:`hal.backend.OMPWorkspace.scratch`)."""
        return self._ws.scratch()

    def encode(self, X: np.ndarray, indices: np.ndarray, values: np.ndarray,
               raw: bool = True) -> None:
        """Codes of the rows of ``X`` (n, m) into ``indices`` (n, width) int32 and ``values``
        (n, width), all C-contiguous in the plan's dtype (the caller checked them).

        ``raw=False``: ``X`` is already checked and standardized (neither is done again).

        Raises
        ------
        ValueError
            If ``X`` holds NaN or Inf (nothing is written then).
        """
        if raw and not np.isfinite(X).all():
            raise nonfinite_error(X)
        if raw and self.mean is not None:
            X = X - self.mean
            X /= self.scale
        res = self.backend.omp_encode(X, self.D, self.G, self.k, tol=self.tol, ws=self._ws)
        k = self.k
        indices[:, :k] = res.indices
        values[:, :k] = res.values
        indices[:, k:] = -1
        values[:, k:] = 0

