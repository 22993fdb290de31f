"""Dense-layer factorizations (SparseSep section 4.1-4.3), plain and data-aware.

Notation: a dense layer computes ``y = x W + b`` with ``W`` of shape (m, n) (m inputs, n units;
tinydl's layout).

* **Truncated SVD**: ``W ~ U V`` with U (m, r), V (r, n): a new r-unit linear layer. It stores
  ``r (m + n)`` numbers instead of ``m n``, so it pays only when ``r < m n / (m + n)``
  (:func:`svd_max_rank`); a rank that does not pay is refused.
* **Sparse dictionary**: ``W ~ B S`` with a dense dictionary B (m, r) and a sparse S (r, n)
  holding at most ``k`` non-zeros per column (per output unit). S is learned by K-SVD whose
  coding step is tinydl's own Batch-OMP (:func:`tinydl.omp`). Storage is counted as stored:
  B, S's values, its row indices (uint8 when r <= 256, uint16 when r <= 65,536) and its
  column pointers (int32).
* **Data-aware** (``X`` given, the layer's inputs on validation data): fit the layer's
  *outputs* ``X W`` instead of ``W``. For SVD that is ``W V_r V_r^T`` with V_r the top right
  singular vectors of ``X W`` (the best rank-r map in output space); for the sparse form, K-SVD
  learns S on the output space and B is then ``W S^+`` (which minimises ``||X W - X B S||``
  for any X). No retraining: only W and the inputs are used.

Both families work on a target ``R`` (p, n) with ``R^T R = W^T W`` (plain) or
``W^T X^T X W`` (data-aware), taken from an SVD / eigendecomposition of an n x n matrix, so the
cost does not grow with the number of validation samples.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import numpy as np

from ..errors import FactorizationCostError
from ..omp import omp

__all__ = ["FactorizationCostError", "svd_max_rank", "svd_factorize", "DenseFactorizer",
           "SparseFactors", "SparseFactorizer", "sparse_factorize", "sparse_nbytes",
           "relative_error", "sparse_index_dtype"]


def _fmt(x: int) -> str:
    return f"{int(x):,}"


def svd_max_rank(m: int, n: int) -> int:
    """Largest rank r with ``r (m + n) < m n`` (0 when no rank pays)."""
    return max(0, (m * n - 1) // (m + n))


def _check_W(W, name="W"):
    W = np.asarray(W)
    if W.ndim != 2 or W.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (m, n), got shape {W.shape}")
    if W.dtype.kind != "f":
        W = W.astype(np.float64)
    bad = W.size - int(np.count_nonzero(np.isfinite(W)))
    if bad:
        raise ValueError(f"{name} {W.shape} has {bad} NaN/Inf value(s)")
    return W


def _check_X(X, m):
    if X is None:
        return None
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    if X.shape[1] != m:
        raise ValueError(f"X has {X.shape[1]} features, the layer takes {m} inputs")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or Inf")
    return X


def _ledoit_wolf(X) -> float:
    """Ledoit-Wolf shrinkage weight of the (uncentred) second moment of the rows of X."""
    from sklearn.covariance import ledoit_wolf_shrinkage
    return float(ledoit_wolf_shrinkage(X, assume_centered=True, block_size=2048))


def relative_error(W, W_hat, X=None) -> float:
    """``||W - W_hat|| / ||W||`` (Frobenius), or ``||X (W - W_hat)|| / ||X W||`` with X."""
    W = np.asarray(W, np.float64)
    D = W - np.asarray(W_hat, np.float64)
    if X is not None:
        X = np.asarray(X, np.float64).reshape(len(X), -1)
        D, W = X @ D, X @ W
    den = np.linalg.norm(W)
    return float(np.linalg.norm(D) / den) if den > 0 else float(np.linalg.norm(D))


class DenseFactorizer:
    """One decomposition of W (plain or data-aware), truncated at any rank for free.

    Parameters
    ----------
    W : ndarray of shape (m, n)
    X : ndarray of shape (n_samples, m), optional
        The layer's inputs (data-aware variant).
    gram : ndarray of shape (n, n), optional
        ``(X W)^T (X W)`` summed by the caller (data-aware without holding every input row at
        once, e.g. a convolution's patches); not with ``X``.

    Attributes
    ----------
    left_ : ndarray of shape (m, q)
    right_ : ndarray of shape (q, n)
        ``W ~ left_[:, :r] @ right_[:r]`` is the best rank-r approximation (of W, or of the
        outputs X W).
    energy_ : ndarray of shape (q,)
        Squared singular values (of W or of X W), descending.
    shrinkage_ : float or None
        The shrinkage weight used.
    """

    def __init__(self, W, X=None, gram=None, shrinkage=None):
        W = _check_W(W)
        self.dtype = W.dtype
        m, n = W.shape
        X = _check_X(X, m)
        W64 = W.astype(np.float64)
        self.shrinkage_ = None
        if gram is not None:
            if X is not None:
                raise ValueError("give X or gram, not both")
            G = np.asarray(gram, np.float64)
            if G.shape != (n, n) or not np.isfinite(G).all():
                raise ValueError(f"gram must be a finite ({n}, {n}) matrix, got {G.shape}")
            lam, V = np.linalg.eigh((G + G.T) / 2)
            order = np.argsort(lam)[::-1]
            lam, Vt = np.clip(lam[order], 0, None), V[:, order].T
            self.left_, self.right_, self.energy_ = W64 @ Vt.T, Vt, lam
        elif X is None:
            U, s, Vt = np.linalg.svd(W64, full_matrices=False)
            self.left_, self.right_, self.energy_ = U * s, Vt, s ** 2
        else:
            Y = X @ W64
            if shrinkage is not None:
                # the inputs' second moment shrunk towards a multiple of the identity
                # (Ledoit & Wolf 2004): (1 - a) X^T X / N + a mu I, so the Gram of the
                # outputs is (1 - a) Y^T Y / N + a mu W^T W; a = 1 is the plain SVD.  With
                # fewer samples than inputs, X^T X misses directions unseen data has
                a = _ledoit_wolf(X) if shrinkage == "ledoit-wolf" else float(shrinkage)
                if not 0.0 <= a <= 1.0:
                    raise ValueError(f"shrinkage must be in [0, 1] or 'ledoit-wolf', got {a}")
                mu = float(np.einsum("ij,ij->", X, X)) / X.size
                G = (1 - a) * (Y.T @ Y) / len(X) + a * mu * (W64.T @ W64)
                self.shrinkage_ = a
                lam, V = np.linalg.eigh((G + G.T) / 2)
                order = np.argsort(lam)[::-1]
                lam, Vt = np.clip(lam[order], 0, None), V[:, order].T
            elif Y.shape[0] < n:  # fewer samples than units: X W has rank <= n_samples
                _, s, Vt = np.linalg.svd(Y, full_matrices=False)
                lam = s ** 2
            else:  # n x n: the cost does not grow with the sample count
                lam, V = np.linalg.eigh(Y.T @ Y)
                order = np.argsort(lam)[::-1]
                lam, Vt = np.clip(lam[order], 0, None), V[:, order].T
            self.left_, self.right_, self.energy_ = W64 @ Vt.T, Vt, lam
        self.shape = (m, n)

    def factors(self, rank: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(U, V)`` of shapes (m, rank), (rank, n), in W's dtype; refuses ranks that don't pay."""
        m, n = self.shape
        rank = int(rank)
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if rank * (m + n) >= m * n:
            raise FactorizationCostError(
                f"rank {rank} would cost {_fmt(rank * (m + n))} parameters, not fewer than the "
                f"original {_fmt(m * n)} ({m} x {n}); ranks below {m * n / (m + n):.1f} pay")
        return (self.left_[:, :rank].astype(self.dtype), self.right_[:rank].astype(self.dtype))

    def rank_for(self, tol: float) -> int:
        """Smallest rank whose relative error (of W, or of X W) is ``<= tol``."""
        total = float(self.energy_.sum())
        if total == 0:
            return 1
        tail = np.concatenate([np.cumsum(self.energy_[::-1])[::-1], [0.0]])  # tail[r] = rest
        ok = np.nonzero(np.sqrt(tail / total) <= tol)[0]
        return max(1, int(ok[0]))


def svd_factorize(W, rank: Optional[int] = None, *, X=None, tol: Optional[float] = None):
    """Truncated-SVD factorization ``W ~ U V``.

    Parameters
    ----------
    W : ndarray of shape (m, n)
    rank : int, optional
        The rank r; or give ``tol``.
    X : ndarray of shape (n_samples, m), optional
        Layer inputs: fit the outputs ``X W`` instead of ``W`` (data-aware).
    tol : float, optional
        Smallest rank whose relative error is ``<= tol``.

    Returns
    -------
    U : ndarray of shape (m, r)
    V : ndarray of shape (r, n)

    Raises
    ------
    FactorizationCostError
        If ``r (m + n) >= m n`` (the factorization would cost more than W).
    """
    if (rank is None) == (tol is None):
        raise ValueError("give exactly one of rank and tol")
    f = DenseFactorizer(W, X)
    return f.factors(f.rank_for(float(tol)) if rank is None else rank)


# -- sparse dictionary ---------------------------------------------------------------------------
class SparseFactors(NamedTuple):
    """``W ~ B S``: B (m, r) dense; S (r, n) sparse by column (CSC).

    Attributes
    ----------
    B : ndarray of shape (m, r)
    data : ndarray of shape (nnz,)
    indices : ndarray of shape (nnz,), uint8, uint16 or int32
        Row (atom) of each value.
    indptr : ndarray of shape (n + 1,), int32
        Column j's values are ``data[indptr[j]:indptr[j + 1]]``.
    """

    B: np.ndarray
    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray

    @property
    def nbytes(self) -> int:
        """Bytes the factors store (B, the non-zeros of S and their indices)."""
        return int(self.B.nbytes + self.data.nbytes + self.indices.nbytes + self.indptr.nbytes)

    def S(self) -> np.ndarray:
        """S as a dense (r, n) array."""
        r, n = self.B.shape[1], self.indptr.size - 1
        S = np.zeros((r, n), self.B.dtype)
        cols = np.repeat(np.arange(n), np.diff(self.indptr))
        S[self.indices.astype(np.intp), cols] = self.data
        return S

    def reconstruct(self) -> np.ndarray:
        """The approximated matrix ``B @ S``, shape (m, n)."""
        return self.B @ self.S()


def sparse_index_dtype(r):
    """The dtype of a sparse factorization's atom indices for ``r`` atoms."""
    # the narrowest type that holds an atom index: a code's index costs as much as its value
    # in int8, so the bytes spent on indices decide whether the sparse form beats the SVD
    if r <= np.iinfo(np.uint8).max + 1:
        return np.uint8
    return np.uint16 if r <= np.iinfo(np.uint16).max + 1 else np.int32


def sparse_nbytes(m: int, n: int, r: int, nnz: int, itemsize: int = 4) -> int:
    """Bytes of a sparse factorization as stored: B, values, indices, pointers."""
    return int(m * r * itemsize + nnz * (itemsize + np.dtype(sparse_index_dtype(r)).itemsize)
               + (n + 1) * 4)


class SparseFactorizer:
    """K-SVD (with Batch-OMP coding) for ``W ~ B S``, plain or data-aware; reuses the
    decomposition of W across calls with different ``(r, k)``.

    Parameters
    ----------
    W : ndarray of shape (m, n)
    X : ndarray of shape (n_samples, m), optional
        Layer inputs (data-aware: S is learned on the output space X W).
    n_iter : int
        K-SVD iterations after the SVD initialisation.
    seed : int
    decomposition : DenseFactorizer, optional
        The same W's (and X's) decomposition, if already computed.
    """

    def __init__(self, W, X=None, n_iter: int = 8, seed: int = 0,
                 decomposition: Optional[DenseFactorizer] = None):
        W = _check_W(W)
        self.W, self.dtype = W.astype(np.float64), W.dtype
        m, n = W.shape
        self.shape = (m, n)
        dec = decomposition if decomposition is not None else DenseFactorizer(W, X)
        # R (p, n) with R^T R = W^T W (plain) or W^T X^T X W: K-SVD is rotation invariant, so
        # coding R's columns is coding W's (or X W's) columns
        keep = dec.energy_ > dec.energy_[0] * 1e-14 if dec.energy_[0] > 0 else dec.energy_ > 0
        keep[0] = True
        self.R = np.sqrt(dec.energy_[keep])[:, None] * dec.right_[keep]
        self.n_iter, self.seed = int(n_iter), int(seed)

    def _ksvd(self, r, k):
        R = self.R
        p, n = R.shape
        rng = np.random.default_rng(self.seed)
        D = np.zeros((p, r))
        q = min(p, r)
        D[np.arange(q), np.arange(q)] = 1.0  # R's left singular vectors are the unit vectors
        if r > p:  # an overcomplete dictionary: the rest start random
            extra = rng.standard_normal((p, r - p))
            D[:, p:] = extra / np.linalg.norm(extra, axis=0)
        for it in range(self.n_iter + 1):
            S = omp(R.T, D.T, k, dtype=np.float64).T  # (r, n), <= k non-zeros per column
            if it == self.n_iter:
                break
            E = R - D @ S
            for j in range(r):  # approximate K-SVD atom update (Rubinstein et al. 2008)
                I = np.nonzero(S[j])[0]
                if I.size == 0:  # an unused atom: restart it on the worst-coded column
                    worst = int(np.argmax(np.einsum("ij,ij->j", E, E)))
                    nrm = np.linalg.norm(E[:, worst])
                    if nrm > 0:
                        D[:, j] = E[:, worst] / nrm
                    continue
                Ej = E[:, I] + np.outer(D[:, j], S[j, I])
                d = Ej @ S[j, I]
                nd = np.linalg.norm(d)
                if nd == 0:
                    continue
                d /= nd
                g = Ej.T @ d
                D[:, j], S[j, I] = d, g
                E[:, I] = Ej - np.outer(d, g)
        return S

    def factors(self, n_atoms: int, k: int, check_cost: bool = True) -> SparseFactors:
        """Learn ``W ~ B S`` with ``n_atoms`` atoms and ``<= k`` non-zeros per column.

        Raises
        ------
        FactorizationCostError
            If the stored factors (B, values, indices, pointers) are not smaller than W.
        """
        m, n = self.shape
        r, k = int(n_atoms), int(k)
        if r < 1 or k < 1:
            raise ValueError(f"n_atoms and k must be >= 1, got n_atoms={r}, k={k}")
        k = min(k, r)
        isz = np.dtype(self.dtype).itemsize
        if check_cost and m * r * isz >= m * n * isz:
            raise FactorizationCostError(
                f"a dictionary of {r} atoms alone would cost {_fmt(m * r)} parameters, not "
                f"fewer than the original {_fmt(m * n)} ({m} x {n})")
        S = self._ksvd(r, k)
        # B = W S^+ minimises ||X W - X B S|| for any X (plain: X = I)
        B = np.linalg.lstsq(S.T, self.W.T, rcond=None)[0].T
        nz = S != 0
        counts = nz.sum(axis=0)
        rows, cols = np.nonzero(nz.T)  # column-major order: CSC
        fac = SparseFactors(B.astype(self.dtype), S[cols, rows].astype(self.dtype),
                            cols.astype(sparse_index_dtype(r)),
                            np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
        if check_cost and fac.nbytes >= m * n * isz:
            raise FactorizationCostError(
                f"{r} atoms with {k} non-zeros per column would store {_fmt(fac.nbytes)} bytes "
                f"(B {_fmt(B.size)} values, S {_fmt(fac.data.size)} values + indices + "
                f"{n + 1} pointers), not fewer than the original {_fmt(m * n * isz)} bytes "
                f"({m} x {n})")
        return fac


def sparse_factorize(W, n_atoms: int, k: Optional[int] = None, *, X=None,
                     tol: Optional[float] = None, n_iter: int = 8, seed: int = 0
                     ) -> SparseFactors:
    """Sparse-dictionary factorization ``W ~ B S`` (K-SVD with tinydl's Batch-OMP).

    Parameters
    ----------
    W : ndarray of shape (m, n)
    n_atoms : int
        Dictionary size r (may exceed the SVD break-even rank).
    k : int, optional
        Non-zeros per column of S; or give ``tol``.
    X : ndarray of shape (n_samples, m), optional
        Layer inputs: fit the outputs ``X W`` (data-aware).
    tol : float, optional
        Smallest ``k`` (binary search) whose relative error is ``<= tol``.

    Returns
    -------
    SparseFactors

    Raises
    ------
    FactorizationCostError
        If the factors would store as much as W.
    ValueError
        If even ``k = n_atoms`` misses ``tol``.
    """
    if (k is None) == (tol is None):
        raise ValueError("give exactly one of k and tol")
    f = SparseFactorizer(W, X, n_iter=n_iter, seed=seed)
    if k is not None:
        return f.factors(n_atoms, k)

    def err(fac):
        return relative_error(f.W, fac.reconstruct(), X)

    best = f.factors(n_atoms, n_atoms, check_cost=False)
    if err(best) > tol:
        raise ValueError(f"{n_atoms} atoms reach a relative error of {err(best):.4f} even with "
                         f"every atom used; tol={tol} needs more atoms")
    lo, hi = 1, int(n_atoms)
    while lo < hi:  # the error falls as k grows: the smallest k that meets tol
        mid = (lo + hi) // 2
        fac = f.factors(n_atoms, mid, check_cost=False)
        if err(fac) <= tol:
            best, hi = fac, mid
        else:
            lo = mid + 1
    return f.factors(n_atoms, hi)  # raises if even the smallest k does not pay
