"""The NumPy backend: the specification every other backend is tested against.

One class, :class:`NumpyBackend`, assembled from the files of this package, each the
specification of one family of operations:

* here: the matrix products (``matmul``, ``rows_matmul`` - the row-independent product that
  makes a stream's results independent of its split -, ``dense_forward``, ``gemm``);
* :mod:`.omp`: Batch-OMP, with the textbook OMP (the paper's Algorithm 1) beside it;
* :mod:`.sparse`: the k-sparse products (gather and scatter of compact codes);
* :mod:`.encode`: a dictionary bound once for repeated encodes into caller-owned codes;
* :mod:`.basis`: the streaming transform's basis (the Wp test and the atom append).

The native backend's C files carry the same names (``hal/backends/native/``).
"""
from __future__ import annotations

import numpy as np

from ...backend import Backend
from .basis import BasisSpec, BasisWorkspace
from .encode import EncodePlan
from .omp import BatchOMP, LinearDependenceWarning, omp_textbook
from .sparse import SparseProducts

__all__ = ["PRODUCT_ROWS", "BasisWorkspace", "EncodePlan", "LinearDependenceWarning",
           "NumpyBackend", "omp_textbook"]

#: rows of every product whose rows must round independently of their neighbours
#: (OMP's correlations ``X @ D.T``, the transform's Wp test): see
#: :meth:`NumpyBackend._rows_matmul`
PRODUCT_ROWS = 16


def _check_block(block) -> int:
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"block must be an integer >= 1, got {block!r}")
    return int(block)


class NumpyBackend(BatchOMP, SparseProducts, BasisSpec, Backend):
    """Reference backend in plain NumPy.

    Parameters
    ----------
    block : int, default=64
        Granularity of chunks and shards (a chunk is a multiple of ``block`` rows).  The
        products themselves run on tiles of exactly :data:`PRODUCT_ROWS` rows (the last
        zero-padded), which makes each row's result independent of the batch it arrived in:
        bit-identical codes however a stream is split (with a single-threaded BLAS;
        multi-threaded BLAS partitions work by size and may round differently).
    batch : int, default=256
        Most samples that advance through the OMP iterations together (bounds the
        workspace).  Fewer are used when their state would not fit :attr:`cache_bytes`.
    """

    name = "numpy"
    bit_identical = True
    #: bytes of per-chunk iteration state (the scaled directions ``Y``) meant to stay in one
    #: core's L2 cache; chunks are a multiple of ``block`` rows that fits (at least ``block``)
    #: rows of each row-independent product (see :meth:`_rows_matmul`)
    cache_bytes: int = 5 * 2 ** 19
    product_rows: int = PRODUCT_ROWS

    def __init__(self, block: int = 64, batch: int = 256, **options) -> None:
        super().__init__(block=_check_block(block), batch=_check_block(batch), **options)
        self.block = int(block)
        self.batch = int(batch)

    # -- matrix products ----------------------------------------------------------------
    def matmul(self, a, b, out=None):
        return np.matmul(a, b, out=out)

    def correlate(self, X, D, out=None):
        return self.matmul(X, D.T, out=out)

    def rows_matmul(self, A, B, out=None):
        """``A @ B`` with each row's result independent of the other rows of ``A``.

        Parameters
        ----------
        A : ndarray of shape (n, p)
        B : ndarray of shape (p, q)
            Any strides.
        out : ndarray of shape (n, q), optional

        Returns
        -------
        out : ndarray of shape (n, q)
            Row ``i`` is bit-identical to the same row in any other ``A`` (with a
            single-threaded BLAS): what makes a stream's results independent of its split.
            Runs as :meth:`_rows_matmul`; the tile buffers are kept for the next call (no
            allocation on the hot path): one pair per dtype, grown to the widest ``p`` and
            ``q`` seen, each call taking its tiles as C-contiguous views from their start.
            (One pair per shape grew without bound: the transform's tests run against
            ``Q[:n]`` for every ``n`` it passes through, one (16, m) tile each - 13 MB at
            m=5625 and 37 atoms.)
        """
        n, p, q = A.shape[0], A.shape[1], B.shape[1]
        if out is None:
            out = np.empty((n, q), np.result_type(A, B))
        pad_in, pad_out = self.product_tiles(out.dtype, p, q)
        return self._rows_matmul(A, B, out, pad_in, pad_out)

    def product_tiles(self, dtype, p, q=0):
        """The backend's one pair of product tiles: ``(pad_in, pad_out)`` of shapes
        (PRODUCT_ROWS, p) and (q, PRODUCT_ROWS), C-contiguous views from the start of two flat
        buffers per dtype, grown to the widest ``p`` and ``q`` asked for.

        Every user of a (PRODUCT_ROWS, m) scratch tile shares ``pad_in``: the products here,
        OMP's correlations (:meth:`_chunk_correlations`) and the Wp test's padded rows
        (:class:`~hal.backends.numpy.basis.BasisWorkspace`), none of which holds it across a
        call of another (one tile of m values instead of three: 720 KB less at m=5625).  A
        product whose ``A`` is ``pad_in`` itself must have exactly PRODUCT_ROWS rows (then
        no tile is padded, ``pad_in`` is only read).  Growing replaces the buffer: callers
        take their views again at each use.
        """
        rows = self.product_rows
        dt = np.dtype(dtype)
        cache = self.__dict__.setdefault("_tiles", {})
        flat_in, flat_out = cache.get(dt.str, (None, None))
        if flat_in is None or flat_in.size < rows * p:
            flat_in = np.empty(rows * p, dt)
        if flat_out is None or flat_out.size < rows * q:
            flat_out = np.empty(rows * q, dt)
        cache[dt.str] = (flat_in, flat_out)
        return flat_in[:rows * p].reshape(rows, p), flat_out[:rows * q].reshape(q, rows)

    def _rows_matmul(self, A, B, out, pad_in, pad_out, sq=None):
        """``out[:] = A @ B`` computed :data:`PRODUCT_ROWS` rows of ``A`` at a time, each
        tile as ``B.T @ tile.T`` (the rows of ``A`` on BLAS's unit-stride side).

        Why this shape: a row's rounding must not depend on where it sits in a product.
        OpenBLAS 0.3.31 (numpy 2.4's Haswell ``sgemm``) rounds the rows of ``A @ B`` in two
        alternating classes (tiles of 6 rows), and those of ``B.T @ A.T`` alike beyond 16
        rows (the first and last 8 differ); ``B.T @ A.T`` on 16 rows was uniform for every
        shape measured (float32 and float64), so every tile has exactly 16 rows (the last
        zero-padded).  ``pad_in`` (PRODUCT_ROWS, p) and ``pad_out`` (q, PRODUCT_ROWS) are the
        tile buffers.  ``sq`` (n,), if given, receives each row's ``|A_i|^2``, computed on
        each tile right after its product, while it is still in cache (a separate pass over
        a wide ``A`` read it from memory again: ~10% of OMP's time at m=5625).
        """
        n = A.shape[0]
        blk = self.product_rows
        BT = B.T
        full = n - n % blk
        for s in range(0, full, blk):
            a = A[s:s + blk]
            self.matmul(BT, a.T, out=pad_out)
            out[s:s + blk] = pad_out.T
            if sq is not None:
                np.einsum("ij,ij->i", a, a, out=sq[s:s + blk])
        if full < n:
            r = n - full
            pad_in[:r] = A[full:]
            pad_in[r:] = 0
            self.matmul(BT, pad_in.T, out=pad_out)
            out[full:] = pad_out.T[:r]
            if sq is not None:
                a = A[full:]
                np.einsum("ij,ij->i", a, a, out=sq[full:])
        return out

    # -- dense layers -------------------------------------------------------------------
    def dense_forward(self, X, W, b=None, out=None):
        out = self.matmul(X, W, out=out)
        if b is not None:
            out += b
        return out

    def gemm(self, a, b, out, alpha=1.0, beta=0.0):
        """``out[...] = alpha * (a @ b) + beta * out`` in place; a (m, k), b (k, n), out
        (m, n).  The reference allocates the product; the rounding is that of the separate
        steps ``t = a @ b; t *= alpha; out *= beta; out += t`` (``beta == 0``: ``out`` is not
        read, as in BLAS)."""
        if a.ndim != 2 or b.ndim != 2 or out.ndim != 2 or a.shape[1] != b.shape[0] \
                or out.shape != (a.shape[0], b.shape[1]):
            raise ValueError(f"gemm needs a (m, k), b (k, n) and out (m, n), got {a.shape}, "
                             f"{b.shape} and {out.shape}")
        prod = self.matmul(a, b)
        if alpha != 1.0:
            prod *= alpha
        if beta == 0.0:
            np.copyto(out, prod, casting="same_kind")
        else:
            if beta != 1.0:
                out *= beta
            out += prod
        return out

