"""The Gram matrix and the inverse Cholesky factor in one ``(lb, lb)`` buffer (a small-memory
plan's option, ``packed_gram``): ``l^2`` values fewer for the whole fill.

``G`` is symmetric and ``Li = L^-1`` lower triangular, so together they fill one square
buffer ``B`` and a vector:

* ``B[i, j] = G[i, j]`` for ``i < j`` (G's strict upper triangle; the lower one is its mirror);
* ``B[i, j] = Li[i, j]`` for ``i >= j`` (Li with its diagonal);
* ``gdiag[i] = G[i, i]``.

``Li`` is read only by the Wp test and the joins, so only while the dictionary fills: when it
is full, :meth:`PackedGram.unpack` mirrors G's upper triangle over Li and writes G's
diagonal back, and ``B`` *is* the Gram matrix from then on (every OMP kernel reads it as
before, the steady state is that of an unpacked dictionary, bit for bit).  While it fills,
the products with ``Li`` run on one block of its rows at a time (up to 16: the backend's
product tile rows; :meth:`li_rows`, :meth:`li_right`, :meth:`li_vec`) and OMP reads G's
rows through :meth:`take_rows` (:func:`hal.backends.numpy.omp._take_rows`).  The products' rounding
differs from the unpacked ``Li`` products (sums split at the blocks' edges), not their
independence of the other rows: a stream's results still do not depend on its split.
"""
from __future__ import annotations

import numpy as np

__all__ = ["PackedGram", "GramView", "LI_BLOCK", "gram_of"]

#: rows of Li materialized at a time (at most: the backend's product tile rows)
LI_BLOCK = 16


def gram_of(P, gdiag) -> np.ndarray:
    """A new full Gram matrix from a packed ``(n, n)`` block ``P`` (G's strict upper
    triangle, Li below) and G's diagonal ``gdiag`` (n,)."""
    n = P.shape[0]
    G = np.triu(P, 1)
    G += G.T
    G[np.arange(n), np.arange(n)] = gdiag
    return G


class PackedGram:
    """``G`` and ``Li`` of up to ``lb`` atoms packed in ``B`` (lb, lb) and ``gdiag`` (lb,).

    Parameters
    ----------
    B : ndarray of shape (lb, lb)
        The packed buffer, C-contiguous (zero past the atoms in use).
    gdiag : ndarray of shape (lb,)
        G's diagonal.
    backend : NumpyBackend
        Its row-independent products (``rows_matmul``) run the Wp test's ``C Li^T``.
    """

    def __init__(self, B, gdiag, backend):
        lb = B.shape[0]
        if B.ndim != 2 or B.shape != (lb, lb) or not B.flags.c_contiguous \
                or gdiag.shape != (lb,) or gdiag.dtype != B.dtype:
            raise ValueError(f"packed Gram: B should be a C-contiguous square array and gdiag "
                             f"its diagonal of the same dtype, got {B.dtype} {B.shape} and "
                             f"{gdiag.dtype} {gdiag.shape}")
        self.B, self.gdiag, self.backend = B, gdiag, backend
        self.dtype = B.dtype
        # a small-memory backend's product tiles of fewer rows (tinydl.lowmem) bound the
        # block too: more, smaller products, only while the dictionary fills
        rows = min(LI_BLOCK, int(getattr(backend, "product_rows", None) or LI_BLOCK), lb)
        self._blk = np.zeros((rows, lb), B.dtype)

    # -- Li's rows, a block at a time ----------------------------------------------------
    def _li_blocks(self, n):
        """``(i0, i1, blk)``: ``blk[:i1 - i0, :i1]`` = ``Li[i0:i1, :i1]`` (zeros above the
        diagonal), for consecutive row blocks of ``Li[:n, :n]``."""
        B, blk = self.B, self._blk
        for i0 in range(0, n, blk.shape[0]):
            i1 = min(n, i0 + blk.shape[0])
            b = blk[:i1 - i0, :i1]
            np.copyto(b, B[i0:i1, :i1])
            for r in range(i1 - i0 - 1):  # G's entries right of the diagonal
                b[r, i0 + r + 1:] = 0
            yield i0, i1, b

    def li_rows(self, C, n, out):
        """``out[:, :n] = C[:, :n] @ Li[:n, :n].T`` (row-independent), ``C`` (r, >= n)."""
        for i0, i1, b in self._li_blocks(n):
            self.backend.rows_matmul(C[:, :i1], b.T, out=out[:, i0:i1])
        return out

    def li_right(self, Z, n, rows=True):
        """A new ``Z[:, :n] @ Li[:n, :n]`` (``rows``: on the row-independent products; else
        NumPy's, for one vector)."""
        W = np.zeros((Z.shape[0], n), self.dtype)
        for i0, i1, b in self._li_blocks(n):
            z = np.ascontiguousarray(Z[:, i0:i1])
            W[:, :i1] += self.backend.rows_matmul(z, b) if rows else z @ b
        return W

    def li_vec(self, g, n):
        """A new ``Li[:n, :n] @ g[:n]``."""
        h = np.empty(n, self.dtype)
        for i0, i1, b in self._li_blocks(n):
            h[i0:i1] = b @ g[:i1]
        return h

    # -- a join ---------------------------------------------------------------------------
    def put(self, n, g, gnn, li_row, li_nn):
        """Atom ``n`` joins: ``G[n, :n] = G[:n, n] = g``, ``G[n, n] = gnn``, ``Li[n, :n] =
        li_row``, ``Li[n, n] = li_nn``."""
        B = self.B
        if n:
            B[:n, n] = g
            B[n, :n] = li_row
        B[n, n] = li_nn
        self.gdiag[n] = gnn

    def unpack(self) -> np.ndarray:
        """``B`` becomes G (Li is dropped): returns it."""
        B = self.B
        lb = B.shape[0]
        for i in range(1, lb):  # row by row: no (lb, lb) temporary
            B[i, :i] = B[:i, i]
        B[np.arange(lb), np.arange(lb)] = self.gdiag
        return B

    def view(self, n) -> "GramView":
        """OMP's read-only view of ``G[:n, :n]``."""
        return GramView(self, n)


class GramView:
    """``G[:n, :n]`` of a :class:`PackedGram` as OMP reads it: :meth:`diagonal` and
    :meth:`take_rows` (rows gathered from G's upper triangle, its mirror and its diagonal)."""

    ndim = 2

    def __init__(self, packed, n):
        self.packed, self.n = packed, int(n)
        self.shape = (self.n, self.n)
        self.dtype = packed.dtype
        self._cols = np.arange(self.n)

    def diagonal(self):
        return self.packed.gdiag[:self.n]

    def take_rows(self, j, out):
        """``out[:] = G[j]`` for indices ``j`` (r,), clipped to ``[0, n)`` as ``np.take``'s
        ``mode="clip"``."""
        n = self.n
        j = np.clip(j, 0, n - 1)
        B = self.packed.B[:n, :n]
        np.copyto(out, B[:, j].T)  # column j: G[i, j] above the diagonal (i < j)
        right = self._cols[None, :] > j[:, None]
        np.copyto(out, B[j], where=right)  # row j: G[j, i] right of the diagonal (i > j)
        out[np.arange(len(j)), j] = self.packed.gdiag[j]
