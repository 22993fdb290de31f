"""The NumPy backend: the specification every other backend is tested against.

Batch-OMP (Rubinstein, Zibulevsky and Elad, 2008) vectorized across samples: all samples of a
batch advance one OMP iteration at a time.  The per-sample state is the QR factorization of the
chosen atoms, kept in coefficient space so that nothing of size m is touched after the first
correlation:

* ``c = X @ D.T`` (n, l): correlations of each sample's residual with every atom (one GEMM; on
  the paper's sizes this is ~96% of the FLOPs),
* ``U[:, s] = D @ q_s`` (n, k, l): correlations of every atom with the s-th orthonormal direction
  ``q_s`` of the chosen atoms' span,
* ``R`` (n, k, k): the triangular factor with ``D_I.T = Q R`` (``R.T R`` is the Cholesky
  factorization of the chosen atoms' Gram matrix, grown one row per iteration: this *is* the
  progressive Cholesky of Batch-OMP, written as R = L.T),
* ``z`` (n, k): the residual's coordinates on the ``q_s``.

Iteration t picks ``j = argmax |c|`` and computes ``w = R[:t, t] = U[:, :t, j]`` (the new
atom's coordinates on the old directions), ``d = sqrt(G[j, j] - |w|^2)``, the new direction's
correlations ``U_t = (G[j] - w @ U[:, :t]) / d`` and coordinate ``z_t = c_j / d``, then
``c -= z_t U_t``.  The coefficients are ``R^-1 z`` (one batched back substitution at the end),
and the squared residual is ``|x|^2 - |z|^2``.  Every step costs O(t l) per sample, the same
as Batch-OMP's ``G_I gamma`` update.
"""
from __future__ import annotations

import warnings
from typing import Optional

import numpy as np

from ..backend import Backend, OMPResult, OMPWorkspace

__all__ = ["NumpyBackend", "LinearDependenceWarning"]


class LinearDependenceWarning(RuntimeWarning):
    """OMP stopped early for some samples because the next atom lies in the span of the
    atoms already chosen (a rank-deficient dictionary)."""


def _check_block(block) -> int:
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"block must be an integer >= 1, got {block!r}")
    return int(block)


class NumpyBackend(Backend):
    """Reference backend in plain NumPy.

    Parameters
    ----------
    block : int, default=64
        Rows per matrix product.  Every product runs on exactly ``block`` rows (the last
        block of a batch is zero-padded), which makes each row's result independent of the
        batch it arrived in: bit-identical codes however a stream is split (with a
        single-threaded BLAS; multi-threaded BLAS partitions work by size and may round
        differently).
    batch : int, default=256
        Samples that advance through the OMP iterations together (bounds the workspace).
    """

    name = "numpy"
    bit_identical = True

    def __init__(self, block: int = 64, batch: int = 256, **options) -> None:
        super().__init__(block=_check_block(block), batch=_check_block(batch), **options)
        self.block = int(block)
        self.batch = int(batch)

    # -- matrix products ----------------------------------------------------------------
    def matmul(self, a, b, out=None):
        return np.matmul(a, b, out=out)

    def correlate(self, X, D, out=None):
        return self.matmul(X, D.T, out=out)

    def _rows_matmul(self, A, B, out, pad_in, pad_out):
        """``out[:] = A @ B`` computed ``self.block`` rows at a time.

        ``pad_in`` (block, p) and ``pad_out`` (block, q) hold the zero-padded last block.
        """
        n = A.shape[0]
        blk = self.block
        full = n - n % blk
        for s in range(0, full, blk):
            self.matmul(A[s:s + blk], B, out=out[s:s + blk])
        if full < n:
            r = n - full
            pad_in[:r] = A[full:]
            pad_in[r:] = 0
            self.matmul(pad_in, B, out=pad_out)
            out[full:] = pad_out[:r]
        return out

    # -- Batch-OMP ----------------------------------------------------------------------
    def prepare_omp(self, batch, m, l, k, dtype) -> OMPWorkspace:
        """Allocate every buffer :meth:`omp_encode` needs for up to ``batch`` samples."""
        dtype = np.dtype(dtype)
        batch = int(min(batch, self.batch)) if batch else self.batch
        batch = max(batch, 1)
        k = int(min(k, l))
        blk = self.block
        a = {
            "corr": np.empty((batch, l), dtype),
            "abs": np.empty((batch, l), dtype),
            "pen": np.empty((batch, l), dtype),
            "tmp": np.empty((batch, l), dtype),
            "U": np.empty((batch, max(k, 1), l), dtype),
            "R": np.zeros((batch, max(k, 1), max(k, 1)), dtype),
            "z": np.empty((batch, max(k, 1)), dtype),
            "xx": np.empty(batch, dtype),
            "resid": np.empty(batch, dtype),
            "limit": np.empty(batch, dtype),
            "j": np.empty(batch, np.intp),
            "active": np.empty(batch, bool),
            "ok": np.empty(batch, bool),
            "pad_in": np.empty((blk, m), dtype),
            "pad_out": np.empty((blk, l), dtype),
        }
        return OMPWorkspace(batch=batch, m=m, l=l, k=k, dtype=dtype, block=blk, arrays=a)

    def omp_encode(self, X, D, G, k, tol=None, ws=None) -> OMPResult:
        """Batch-OMP of each row of ``X`` on the atoms (rows) of ``D``.

        Parameters
        ----------
        X : ndarray of shape (n, m)
        D : ndarray of shape (l, m)
            Atoms as rows (unit norm for OMP's argmax to be fair; not required).
        G : ndarray of shape (l, l)
            ``D @ D.T``.
        k : int
            Maximum non-zeros per sample (clipped to l).
        tol : float, optional
            Stop a sample once ``||x - code @ D|| <= tol * ||x||`` (relative residual).
        ws : OMPWorkspace, optional
            From :meth:`prepare_omp`; allocated here if absent or too small.

        Returns
        -------
        OMPResult
        """
        n, m = X.shape
        l = D.shape[0]
        k = int(min(k, l))
        dtype = X.dtype
        if ws is None or not ws.fits(min(n, ws.batch) if ws else n, m, l, k, dtype) \
                or ws.block != self.block:
            ws = self.prepare_omp(min(n, self.batch), m, l, k, dtype)
        indices = np.full((n, k), -1, np.int32)
        values = np.zeros((n, k), dtype)
        nnz = np.zeros(n, np.int32)
        resid = np.empty(n, dtype)
        dependent = 0
        for s in range(0, n, ws.batch):
            e = min(n, s + ws.batch)
            dependent += self._omp_chunk(X[s:e], D, G, k, tol, ws, indices[s:e],
                                         values[s:e], nnz[s:e], resid[s:e])
        if dependent:
            warnings.warn(
                f"OMP stopped early for {dependent} of {n} samples: the next atom was linearly "
                f"dependent on the atoms already chosen (rank-deficient dictionary, l={l})",
                LinearDependenceWarning, stacklevel=3)
        return OMPResult(indices, values, nnz, resid)

    def _omp_chunk(self, X, D, G, k, tol, ws, idx, val, nnz, resid_out) -> int:
        n = X.shape[0]
        A = ws.arrays
        c = A["corr"][:n]
        absc = A["abs"][:n]
        U = A["U"][:n]
        R = A["R"][:n]
        z = A["z"][:n]
        xx = A["xx"][:n]
        resid = A["resid"][:n]
        limit = A["limit"][:n]
        j = A["j"][:n]
        active = A["active"][:n]
        ok = A["ok"][:n]
        rows = np.arange(n)
        gdiag = np.diagonal(G)
        tiny = np.finfo(X.dtype).eps
        pen = A["pen"][:n]  # 0 for atoms still free, -inf for chosen ones
        tmp = A["tmp"][:n]

        self._rows_matmul(X, D.T, c, A["pad_in"], A["pad_out"])
        np.einsum("ij,ij->i", X, X, out=xx)
        resid[:] = xx
        if tol is None:
            limit[:] = 0
        else:
            np.multiply(xx, float(tol) ** 2, out=limit)
        R[:] = 0
        z[:] = 0
        pen[:] = 0
        # a zero sample, or one already within tolerance, takes no atom
        np.greater(resid, limit, out=active)
        active &= xx > 0
        dependent = 0
        for t in range(k):
            if not active.any():
                break
            np.abs(c, out=absc)
            absc += pen  # chosen atoms have c ~ 0 up to rounding: never pick one twice
            np.argmax(absc, axis=1, out=j)
            cj = c[rows, j]
            pen[rows, j] = -np.inf
            w = U[rows, :t, j]  # (n, t): the new atom's coordinates on the old directions
            gj = gdiag[j]
            d2 = gj - np.einsum("ij,ij->i", w, w)
            np.greater(d2, tiny * gj, out=ok)
            dependent += int(np.count_nonzero(active & ~ok & (cj != 0)))
            ok &= active
            ok &= cj != 0
            # stopped samples get d = inf: their new direction, coordinate and R entry vanish
            d = np.sqrt(np.where(ok, d2, np.inf))
            zt = cj / d
            # U_t = (G[j] - w @ U[:, :t]) / d  -- the new direction's atom correlations
            Ut = U[:, t]
            np.take(G, j, axis=0, out=Ut, mode="clip")
            if t:
                np.matmul(w[:, None, :], U[:, :t], out=tmp[:, None, :])
                Ut -= tmp
            Ut /= d[:, None]
            np.multiply(Ut, zt[:, None], out=tmp)
            c -= tmp
            R[:, :t, t] = w
            R[:, t, t] = d
            z[:, t] = zt
            idx[:, t] = np.where(ok, j, -1)
            nnz += ok
            resid -= zt * zt
            np.maximum(resid, 0, out=resid)
            active &= ok
            active &= resid > limit
        # coefficients: solve R gamma = z by back substitution, all samples at once
        kk = int(nnz.max()) if n else 0
        for t in range(kk - 1, -1, -1):
            acc = z[:, t] - np.einsum("ij,ij->i", R[:, t, t + 1:kk], val[:, t + 1:kk])
            val[:, t] = acc / R[:, t, t]
        val[idx < 0] = 0
        resid_out[:] = resid
        return dependent

    # -- dense layers -------------------------------------------------------------------
    def dense_forward(self, X, W, b=None, out=None):
        out = self.matmul(X, W, out=out)
        if b is not None:
            out += b
        return out

    def gather_matmul(self, indices, values, W, out=None):
        n, k = indices.shape
        if out is None:
            out = np.zeros((n, W.shape[1]), np.result_type(values, W))
        else:
            out[:] = 0
        for t in range(k):
            col = indices[:, t]
            live = col >= 0
            if live.all():
                out += values[:, t, None] * W[col]
            elif live.any():
                out[live] += values[live, t, None] * W[col[live]]
        return out
