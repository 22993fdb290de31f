"""Orthogonal Matching Pursuit (the TinyDL paper's Algorithm 1), batched.

The paper codes a sample ``a`` (a column, m x 1) over ``D`` (m x l, atoms as columns) with at
most ``k`` non-zeros.  Here samples are rows: ``X`` (n, m) is the paper's ``A.T``, the
dictionary (l, m) is the paper's ``D.T`` and the dense codes (n, l) are the paper's ``C.T``,
so that ``X ~ codes @ D``.

The work itself is :meth:`hal.Backend.omp_encode` (Batch-OMP: Gram matrix, progressive
Cholesky/QR, every sample of a batch advancing one iteration at a time) on the backend given.
"""
from __future__ import annotations

import numpy as np

import hal

from ._validation import check_array, check_float, check_int
from .codes import SparseCodes, codes_to_dense

__all__ = ["omp", "prepare", "PreparedDictionary", "SparseCodes", "codes_to_dense"]


class PreparedDictionary:
    """A dictionary made ready for repeated OMP calls: what depends only on ``D`` (the Gram
    matrix, a contiguous private copy of ``D``, the backend) is computed once.

    Build it with :func:`tinydl.omp.prepare`; code with :meth:`encode` or
    ``omp(X, prepared)``.  Codes are bit-identical to ``omp(X, D, k, ...)`` on the same
    backend.  The backend's workspace (its scratch buffers, including its copy of ``D.T``)
    is allocated per instance on the first call, reused while the shapes fit, and never
    pickled: a copy (pickle, joblib, ``copy.deepcopy``) allocates its own.  One instance is
    not for concurrent use from several threads (its scratch is shared); give each thread a
    copy.  ``D`` is copied: changing the caller's array later does not affect the prepared
    one (prepare again).
    """

    def __init__(self, D, k, *, tol=None, dtype=None, backend=None, gram=None):
        D = check_array(D, "D", dtype=dtype)
        self.D = np.array(D, copy=True, order="C")
        self.D.flags.writeable = False
        self.k = check_int(k, "k", low=1)
        self.tol = check_float(tol, "tol", low=0.0, allow_none=True)
        self.dtype = self.D.dtype
        if gram is None:
            G = self.D @ self.D.T
        else:
            G = check_array(gram, "gram", dtype=self.dtype)
            if G.shape != (self.D.shape[0], self.D.shape[0]):
                raise ValueError(f"gram must have shape {(self.D.shape[0],) * 2}, got "
                                 f"{G.shape}")
        self.G = np.ascontiguousarray(G)
        self.G.flags.writeable = False
        self.backend = backend
        self._be = hal.get_backend(backend)
        self._ws = None

    n_atoms = property(lambda self: self.D.shape[0])
    n_features = property(lambda self: self.D.shape[1])

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_ws"] = None  # scratch: never pickled, allocated again by the copy
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    def encode(self, X, *, return_dense=True, return_residual=False):
        """The codes of the rows of ``X`` (as :func:`omp` with this dictionary)."""
        X = check_array(X, "X", dtype=self.dtype, n_features=self.n_features)
        ws = self._ws
        n, m = X.shape
        l, k = self.D.shape[0], min(self.k, self.D.shape[0])
        if ws is None or not ws.fits(min(n, ws.batch), m, l, k, self.dtype):
            ws = self._be.prepare_omp(getattr(self._be, "batch", 256), m, l, k, self.dtype)
            ws.fixed_D = True  # self.D never changes: a backend's D.T copy is made once
            self._ws = ws
        codes = self._be.omp_encode(X, self.D, self.G, self.k, tol=self.tol, ws=ws)
        out = codes.to_dense() if return_dense else codes
        return (out, codes.residual_sq) if return_residual else out

    def __repr__(self):
        return (f"PreparedDictionary(n_atoms={self.n_atoms}, n_features={self.n_features}, "
                f"k={self.k}, dtype={self.dtype.name})")


def prepare(D, k, *, tol=None, dtype=None, backend=None, gram=None) -> PreparedDictionary:
    """Prepare ``D`` (atoms as rows) for repeated :func:`omp` calls with ``k`` non-zeros:
    the Gram matrix and the backend's buffers are made once.  See
    :class:`PreparedDictionary`; ``dtype`` defaults to that of ``D`` (integers become
    float64)."""
    return PreparedDictionary(D, k, tol=tol, dtype=dtype, backend=backend, gram=gram)


def omp(X, D, k=None, *, tol=None, gram=None, backend=None, return_dense=True,
        return_residual=False, dtype=None):
    """Code each row of ``X`` with at most ``k`` atoms of ``D`` by OMP.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Samples as rows (the paper's ``A.T``).
    D : array-like of shape (n_atoms, n_features), or PreparedDictionary
        Dictionary, atoms as rows (or one made ready by :func:`prepare`: then ``k``,
        ``tol``, ``dtype``, ``gram`` and ``backend`` are the prepared ones and must not be
        given).  The (the paper's ``D.T``).  OMP's greedy choice is fair only if
        the atoms have unit norm; other norms are allowed and used as given.
    k : int (required unless ``D`` is prepared)
        Maximum non-zeros per sample, ``k >= 1``; values above ``n_atoms`` are clipped.
    tol : float, optional
        Also stop a sample once its relative residual ``||x - c D|| / ||x||`` is ``<= tol``.
    gram : array-like of shape (n_atoms, n_atoms), optional
        Precomputed ``D @ D.T``.
    backend : str or hal.Backend, optional
        Where the work runs (default: :func:`hal.get_backend`).
    return_dense : bool, default=True
        Return dense codes (n_samples, n_atoms); otherwise a :class:`SparseCodes`.
    return_residual : bool, default=False
        Also return the squared residual norms, shape (n_samples,).
    dtype : {None, float32, float64}
        Compute dtype; by default that of ``X`` (integers become float64, float16 float32).

    Returns
    -------
    codes : ndarray of shape (n_samples, n_atoms) or SparseCodes
    residual_sq : ndarray of shape (n_samples,)
        Only if ``return_residual``.

    Notes
    -----
    An all-zero sample gets an all-zero code.  A sample stops at the rank of its chosen atoms:
    once its best correlation is at rounding level (``|c_j| <= 16 k eps |x| |d_j|``: it is
    represented, or what is left lies outside the atoms' span) or the next atom is linearly
    dependent on the chosen ones, it keeps fewer than ``k`` non-zeros rather than fitting
    atoms to rounding noise.  One :class:`hal.backends.numpy.LinearDependenceWarning` per
    call names how many samples stopped so with a residual left (a rank-deficient
    dictionary) or because ``k`` exceeds ``n_features`` (no sample can take more than
    ``n_features`` independent atoms); a sample that is represented with ``k <= n_features``
    stops silently.  No NaN is ever produced.  Every backend follows these rules.
    """
    if isinstance(D, PreparedDictionary):
        given = [name for name, v in (("k", k), ("tol", tol), ("gram", gram),
                                      ("backend", backend), ("dtype", dtype)) if v is not None]
        if given:
            raise TypeError(f"omp(X, prepared) takes {', '.join(given)} from the prepared "
                            "dictionary: prepare again to change them")
        return D.encode(X, return_dense=return_dense, return_residual=return_residual)
    if k is None:
        raise TypeError("omp() needs k (the maximum non-zeros) unless D is prepared")
    X = check_array(X, "X", dtype=dtype)
    D = check_array(D, "D", dtype=X.dtype, n_features=X.shape[1])
    k = check_int(k, "k", low=1)
    tol = check_float(tol, "tol", low=0.0, allow_none=True)
    if gram is None:
        G = D @ D.T
    else:
        G = check_array(gram, "gram", dtype=X.dtype)
        if G.shape != (D.shape[0], D.shape[0]):
            raise ValueError(f"gram must have shape {(D.shape[0], D.shape[0])}, got {G.shape}")
    be = hal.get_backend(backend)
    codes = be.omp_encode(X, D, G, k, tol=tol)
    out = codes.to_dense() if return_dense else codes
    return (out, codes.residual_sq) if return_residual else out
