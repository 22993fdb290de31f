"""Orthogonal Matching Pursuit (the TinyDL paper's Algorithm 1), batched.

The paper codes a sample ``a`` (a column, m x 1) over ``D`` (m x l, atoms as columns) with at
most ``k`` non-zeros.  Here samples are rows: ``X`` (n, m) is the paper's ``A.T``, the
dictionary (l, m) is the paper's ``D.T`` and the dense codes (n, l) are the paper's ``C.T``,
so that ``X ~ codes @ D``.

The work itself is :meth:`hal.Backend.omp_encode` (Batch-OMP: Gram matrix, progressive
Cholesky/QR, every sample of a batch advancing one iteration at a time) on the backend given.
"""
from __future__ import annotations

import hal

from ._validation import check_array, check_float, check_int
from .codes import SparseCodes, codes_to_dense

__all__ = ["omp", "SparseCodes", "codes_to_dense"]


def omp(X, D, k, *, tol=None, gram=None, backend=None, return_dense=True,
        return_residual=False, dtype=None):
    """Code each row of ``X`` with at most ``k`` atoms of ``D`` by OMP.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Samples as rows (the paper's ``A.T``).
    D : array-like of shape (n_atoms, n_features)
        Dictionary, atoms as rows (the paper's ``D.T``).  OMP's greedy choice is fair only if
        the atoms have unit norm; other norms are allowed and used as given.
    k : int
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
