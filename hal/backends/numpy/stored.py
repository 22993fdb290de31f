"""The NumPy reference of a dictionary *stored* narrower than it is computed with: float16, or
int8 with one float32 scale per atom (``atom = scale * q``, ``q`` in -127..127).

The transform's state is then ``Dq`` (lb, m) in the storage dtype and ``scale`` (lb,), with the
Gram matrix ``G`` and the inverse Cholesky factor ``Li`` in the compute dtype, both of the
*decoded* atoms (so OMP and the Wp test are exact for the dictionary as stored).  Every product
with the atoms (the correlations ``D a`` of the Wp test and of OMP, the explicit residual)
decodes ``_TILE`` atoms at a time into one float32 tile and multiplies it on the backend's
row-independent products (``rows_matmul``): no dictionary-sized float32 array exists.  A join
quantizes the new unit-norm atom, then appends G's row and column from the decoded atom and
Li's row by the Cholesky update ``h = Li[:n, :n] G[:n, n]``, ``L[n, n] = sqrt(G[n, n] -
|h|^2)``.

:func:`quantize` and :func:`decode` are the storage arithmetic (int8: the per-atom clip
factor of :mod:`hal.quantize` with the least reconstruction error).

The native backend runs float32's correlation kernels on the stored atoms instead
(``hal/backends/native/stored.c``, :mod:`hal.backends.native.stored`: a transposed copy in
the stored dtype, decoded in registers for a lone row, a chunk at a time into a float tile
for a batch); this module is its specification.  A workspace takes its products from
:meth:`_make_tiles` and its encode plans from :meth:`_make_plan`: what a backend with kernels
of its own replaces.
"""
from __future__ import annotations

import inspect

import numpy as np

from ...quantize import FINE_CLIP_FACTORS, clip_rows
from .basis import BasisWorkspace
from .encode import EncodePlan, nonfinite_error

__all__ = ["StoredBasisWorkspace", "StoredEncodePlan", "SparseAtoms", "quantize", "decode",
           "STORAGE"]

#: the storage dtypes this module implements
STORAGE = ("float16", "int8")
#: atoms decoded at a time (a backend's ``stored_tile_rows`` attribute overrides it: a
#: small-memory plan decodes fewer, ``tinydl.lowmem.plan_backend``)
_TILE = 16


def quantize(a: np.ndarray, storage) -> tuple:
    """Rows of ``a`` in the storage dtype: ``(q, scale)``.

    Parameters
    ----------
    a : ndarray of shape (n, m)
    storage : {"float16", "int8"}

    Returns
    -------
    q : ndarray of shape (n, m), the storage dtype
    scale : ndarray of shape (n,), float32, or None for float16
        int8: ``f max |a_i| / 127`` per row, ``q = clip(round(a / scale), -127, 127)``, the
        clip factor ``f`` of :data:`hal.quantize.FINE_CLIP_FACTORS` (1 down to 1/2 in steps
        of 1/64) with the least reconstruction error ``|a_i - scale_i q_i|^2``
        (:func:`hal.quantize.clip_rows`, the export's search): never more error than
        ``f = 1`` (max-abs), whose error per value is at most ``scale / 2``.
    """
    # a dtype is taken as it is: str() of it at every join left its name string alive
    # (measured in `tinydl fit --trace-memory`: ~57 B an atom, 4.6 KB at l=80)
    st = storage if isinstance(storage, np.dtype) else (
        np.dtype(storage) if str(storage) in STORAGE else None)
    if st == np.float16:
        return a.astype(np.float16), None
    if st != np.int8:
        raise ValueError(f"storage must be one of {STORAGE}, got {storage!r}")
    return clip_rows(a, factors=FINE_CLIP_FACTORS)


def _half_to_single(q: np.ndarray, out: np.ndarray, finite: bool = False) -> None:
    """``out[:] = q`` for float16 ``q`` into float32 ``out`` (both C-contiguous), exactly, by
    the bits, in three passes: NumPy's own conversion is scalar (1,080 us for (100, 5625),
    measured; this ~250 us).  The half's bits, sign-extended to 32 and moved 13 up, hold the
    sign in bits 28..31 and the exponent and mantissa in bits 13..27; bits 28..30 cleared,
    they make a float32 2^112 times too small, subnormals included (every finite half, bit
    for bit: ``tests/core/test_stored_dtype.py``).  Inf and NaN come out at 65536 or more in
    magnitude, which no finite half reaches, and are then converted NumPy's way, unless the
    caller vouches that ``q`` is ``finite`` (stored atoms: quantized from finite unit-norm
    atoms, or checked finite on load), which saves the check's two passes."""
    s = out.view(np.int32)
    np.left_shift(q.view(np.int16), 13, out=s, dtype=np.int32)
    s &= np.int32(-0x70000001)  # 0x8FFFFFFF: the sign and the 15 bits of the half
    out *= np.float32(2.0 ** 112)
    if not finite and out.size and (out.max() >= 65536 or out.min() <= -65536):
        np.copyto(out, q, casting="unsafe")


def decode(q: np.ndarray, scale, dtype, out=None, finite: bool = False) -> np.ndarray:
    """``scale * q`` (or the float16 values) in ``dtype``, into ``out`` if given (``finite``:
    the caller vouches that ``q`` holds no Inf or NaN, see :func:`_half_to_single`)."""
    if out is None:
        out = np.empty(q.shape, dtype)
    if q.dtype == np.float16 and out.dtype == np.float32 and out.flags.c_contiguous \
            and q.flags.c_contiguous:
        _half_to_single(q, out, finite)
    else:
        np.copyto(out, q, casting="unsafe")
    if scale is not None:
        out *= scale[:, None].astype(out.dtype, copy=False)
    return out


class SparseAtoms:
    """int8 atoms kept as their ``width`` largest entries: for sparse data (UJIIndoorLoc's rows
    have ~18 of 520 non-zeros), where a dense int8 dictionary is mostly zeros.

    Each atom is a fixed-width row (ELLPACK): ``idx`` (lb, width) uint16 column indices and
    ``val`` (lb, width) int8 values, 3 bytes an entry against ``m`` bytes a dense int8 atom.
    An atom with fewer non-zeros repeats its last entry (a harmless rewrite of the same
    value); one with more keeps its ``width`` largest in magnitude and drops the rest, like
    quantization: the Gram matrix, Wp and OMP are those of the atoms *as stored*, so they
    stay exact for the dictionary in use.  With ``width`` at least an atom's non-zeros the
    decoded atoms are the dense int8 store's, bit for bit.

    It stands in for the ``(lb, m)`` int8 array: ``shape``, ``dtype``, ``nbytes``,
    ``D[t:e]`` (dense int8 rows, new), ``D[n] = q`` (store a dense int8 row), and
    :meth:`decode_into` (the tiles' decode, no dense int8 transient).
    """

    dtype = np.dtype(np.int8)

    def __init__(self, lb: int, m: int, width: int):
        if not 1 <= int(m) <= 65536:
            raise ValueError(f"SparseAtoms: m={m} columns do not fit uint16 indices "
                             "(at most 65,536)")
        if int(width) < 1:
            raise ValueError(f"SparseAtoms: width must be >= 1, got {width}")
        self.shape = (int(lb), int(m))
        self.width = int(min(width, m))
        self.idx = np.zeros((self.shape[0], self.width), np.uint16)
        self.val = np.zeros((self.shape[0], self.width), np.int8)

    @property
    def nbytes(self) -> int:
        return self.idx.nbytes + self.val.nbytes

    def __len__(self) -> int:
        return self.shape[0]

    def __setitem__(self, n, q) -> None:
        q = np.asarray(q)
        if not isinstance(n, (int, np.integer)) or q.shape != (self.shape[1],) \
                or q.dtype != np.int8:
            raise TypeError(f"SparseAtoms: store one int8 row of {self.shape[1]} values at "
                            f"an integer position, got {q.dtype} {q.shape} at {n!r}")
        nz = np.flatnonzero(q)
        if nz.size > self.width:  # the largest |q|; ties to the lower column (stable)
            order = np.argsort(-np.abs(q[nz].astype(np.int16)), kind="stable")
            nz = np.sort(nz[order[:self.width]])
        if nz.size == 0:
            self.idx[n], self.val[n] = 0, 0
            return
        self.idx[n, :nz.size], self.val[n, :nz.size] = nz, q[nz]
        self.idx[n, nz.size:], self.val[n, nz.size:] = nz[-1], q[nz[-1]]

    def decode_into(self, t: int, e: int, scale, out: np.ndarray) -> np.ndarray:
        """``out[:e - t] = scale[t:e, None] * atoms[t:e]`` (``scale`` None: the int8 values)."""
        o = out[:e - t]
        o[...] = 0
        rows = np.arange(e - t)[:, None]
        o[rows, self.idx[t:e]] = self.val[t:e]
        if scale is not None:
            o *= scale[t:e, None].astype(o.dtype, copy=False)
        return o

    def __getitem__(self, sl) -> np.ndarray:
        if not isinstance(sl, slice):
            raise TypeError("SparseAtoms: index with a slice of rows (D[t:e])")
        t, e, step = sl.indices(self.shape[0])
        if step != 1:
            raise TypeError("SparseAtoms: a contiguous slice of rows, please")
        return self.decode_into(t, max(t, e), None,
                                np.empty((max(0, e - t), self.shape[1]), np.int8))


class _Tiles:
    """Products with the stored atoms, decoded ``_TILE`` at a time."""

    def __init__(self, backend, Dq, scale, dtype):
        self.backend, self.Dq, self.scale = backend, Dq, scale
        self.dtype = np.dtype(dtype)
        self.rows = max(1, int(getattr(backend, "stored_tile_rows", _TILE)))
        # sparse atoms scatter straight into the tile (no int8 transient); decided once, the
        # tiles are decoded a few atoms at a time on every product
        self.sparse = isinstance(Dq, SparseAtoms)
        self.buf = np.zeros((min(self.rows, Dq.shape[0]), Dq.shape[1]), self.dtype)

    def tile(self, t, e):
        if self.sparse:
            return self.Dq.decode_into(t, e, self.scale, self.buf)
        sc = None if self.scale is None else self.scale[t:e]
        # stored atoms are finite (quantized from finite atoms, or checked on load)
        return decode(self.Dq[t:e], sc, self.dtype, out=self.buf[:e - t], finite=True)

    def refresh(self, j):
        """Atom ``j`` was rewritten: nothing to follow (the tiles decode ``Dq`` as it
        stands; the native tiles keep a transposed copy)."""

    def correlate(self, X, nq, out):
        """``out[:, :nq] = X @ decode(D[:nq]).T`` (row-independent)."""
        for t in range(0, nq, self.rows):
            e = min(nq, t + self.rows)
            self.backend.rows_matmul(X, self.tile(t, e).T, out=out[:, t:e])
        return out

    def combine(self, W, nq, out):
        """``out -= W[:, :nq] @ decode(D[:nq])`` (row-independent)."""
        for t in range(0, nq, self.rows):
            e = min(nq, t + self.rows)
            out -= self.backend.rows_matmul(np.ascontiguousarray(W[:, t:e]), self.tile(t, e))
        return out


class StoredEncodePlan(EncodePlan):
    """:class:`~hal.backends.numpy.encode.EncodePlan` over stored atoms: the correlations
    come from decoded tiles, then the backend's Batch-OMP runs on them."""

    def __init__(self, backend, tiles, nq, G, k, tol=None, mean=None, scale=None, width=None):
        self.backend, self.tiles, self.G, self.nq = backend, tiles, G, nq
        self.l, self.m = nq, tiles.Dq.shape[1]
        self.D = None
        self.k = int(min(k, self.l))
        self.width = self.k if width is None else int(width)
        self.tol, self.mean, self.scale = tol, mean, scale
        self.dtype = tiles.dtype
        # the products read the stored atoms: no copy of D.T (not even allocated and dropped)
        # (a backend whose prepare_omp has no such copy, native's, takes no dt_copy)
        opt = {"dt_copy": False} if "dt_copy" in inspect.signature(
            backend.prepare_omp).parameters else {}
        self._ws = backend.prepare_omp(getattr(backend, "batch", 256), self.m, self.l, self.k,
                                       self.dtype, **opt)
        self._ws.arrays.pop("DT", None)
        self._ws.fixed_D = True

    def encode(self, X, indices, values, raw=True) -> None:
        if raw and not np.isfinite(X).all():
            raise nonfinite_error(X)
        if raw and self.mean is not None:
            X = X - self.mean
            X /= self.scale
        ws, be, k = self._ws, self.backend, self.k
        n = X.shape[0]
        nnz = np.zeros(n, np.int32)
        resid = np.empty(n, self.dtype)
        corr = np.empty((min(n, ws.batch), self.l), self.dtype)
        for s in range(0, n, ws.batch):
            e = min(n, s + ws.batch)
            Xc = X[s:e]
            if e - s == 1 and be._lone_as_pair:  # see BatchOMP.omp_encode
                Xc = np.concatenate([Xc, Xc])
                c = np.empty((2, self.l), self.dtype)
                self.tiles.correlate(Xc, self.l, c)
                pi, pv = np.full((2, k), -1, np.int32), np.zeros((2, k), self.dtype)
                be._omp_chunk(Xc, None, self.G, k, self.tol, ws, pi, pv, np.zeros(2, np.int32),
                              np.empty(2, self.dtype), corr=c)
                indices[s, :k], values[s, :k] = pi[0], pv[0]
                continue
            c = corr[:e - s]
            self.tiles.correlate(Xc, self.l, c)
            # a code that stops early (rank deficiency) leaves its tail unwritten: pads as
            # omp_encode's (the caller's buffers may be uninitialized)
            pi, pv = indices[s:e, :k], values[s:e, :k]
            if not pi.flags.c_contiguous:  # fewer atoms than the codes' width: an OMP
                # kernel of its own (native's) writes whole rows of k
                pi, pv = np.empty((e - s, k), np.int32), np.empty((e - s, k), self.dtype)
            pi[...] = -1
            pv[...] = 0
            be._omp_chunk(Xc, None, self.G, k, self.tol, ws, pi, pv, nnz[s:e], resid[s:e],
                          corr=c)
            if pi.base is None:
                indices[s:e, :k], values[s:e, :k] = pi, pv
        indices[:, k:] = -1
        values[:, k:] = 0


class StoredBasisWorkspace(BasisWorkspace):
    """:class:`~hal.backends.numpy.basis.BasisWorkspace` over stored atoms ``Dq`` (float16,
    or int8 with ``scale``); ``G`` and ``Li`` in the compute dtype, of the decoded atoms."""

    def __init__(self, backend, Dq, scale, G, Li, gdiag=None):
        lb, m = Dq.shape
        dt = G.dtype
        if not isinstance(Dq, SparseAtoms) and (Dq.dtype.name not in STORAGE
                                                 or not Dq.flags.c_contiguous):
            raise ValueError(f"prepare_basis: stored atoms should be C-contiguous "
                             f"{' or '.join(STORAGE)}, got {Dq.dtype}")
        if (Dq.dtype == np.int8) != (scale is not None):
            raise ValueError("prepare_basis: int8 atoms need their per-atom scale (and only "
                             "they)")
        self.D, self.scale = Dq, scale
        self._setup(backend, G, Li, dt, m, lb, gdiag)
        self._tiles = self._make_tiles(backend, Dq, scale, dt)

    # the two things a backend with kernels of its own replaces (hal.backends.native.stored)
    def _make_tiles(self, backend, Dq, scale, dt):
        """The products with the stored atoms: ``correlate(X, nq, out)`` and
        ``combine(W, nq, out)`` (see :class:`_Tiles`)."""
        return _Tiles(backend, Dq, scale, dt)

    def _make_plan(self, nd, k, tol, mean, scale, width):
        """The encode plan over the first ``nd`` (>= 2) stored atoms."""
        # G's leading block as a view, not a (nd, nd) copy held while the dictionary fills
        # (OMP gathers its rows: hal.backends.numpy.omp._take_rows)
        return StoredEncodePlan(self.backend, self._tiles, nd, self._gram(nd), k, tol=tol,
                                mean=mean, scale=scale, width=width)

    def _correlate(self, X, nq, out):
        self._tiles.correlate(X, nq, out)

    def _residual(self, W, nq, X):
        return self._tiles.combine(W, nq, X.copy())

    def _join(self, n, a, r, wp2):
        xx = self._xx[r]
        norm = np.sqrt(xx)
        q, sc = quantize((a / norm)[None, :].astype(self.dtype), self.D.dtype)
        self.D[n] = q[0]
        if sc is not None:
            self.scale[n] = sc[0]
        for tiles in (self._tiles, self._xdt):  # (the execution plan's, if made)
            if tiles is not None:
                tiles.refresh(n)
        d = decode(self.D[n:n + 1], None if sc is None else self.scale[n:n + 1], self.dtype)
        gnn = np.dot(d[0], d[0])
        if n:
            g = np.empty((1, max(n, 2)), self.dtype)
            self._tiles.correlate(d, max(n, 2), g)
            pk = self.packed
            h = self.Li[:n, :n] @ g[0, :n] if pk is None else pk.li_vec(g[0], n)
            lnn = np.sqrt(max(gnn - np.dot(h, h), np.finfo(self.dtype).tiny))
            self._put(n, g[0, :n], gnn, h, lnn)
        else:
            self._put(0, None, gnn, None, np.sqrt(gnn))
        return norm

    # the execution phase (BasisWorkspace.exec_plan) on a compiled_execution backend:
    # stored.c's one-call encode over these stored atoms (a transposed copy in their stored
    # dtype, refreshed by _join; float32 compute), a fixed order per row, so the stream's
    # codes stay independent of the split
    def _exec_ok(self, xbe) -> bool:
        return self.dtype == np.float32 and hasattr(xbe, "prepare_stored_basis") \
            and self.packed is None and not isinstance(self.D, SparseAtoms)

    def _exec_make(self, xbe, n, k, tol, width, mean, scale):
        from ..native.stored import StoredEncodePlan as NativePlan
        from ..native.stored import StoredTiles
        if self._xdt is None:  # here: the native tiles over the stored atoms, bound once
            self._xdt = StoredTiles(xbe._nffi, xbe._nlib, self.D, self.scale)
        return NativePlan(self._xdt, max(n, 2), self.G, min(k, n), tol=tol, mean=mean,
                          scale=scale, width=width)

    def plan(self, n, k, tol=None, width=None, mean=None, scale=None):
        key = (n, k, tol, width, mean is not None)
        if self._plan_key != key or (mean is not None and self._plan.mean is not mean):
            self._plan = None
            nd = max(n, 2)
            self._plan = self._make_plan(nd, min(k, n), tol, mean, scale, width)
            self._plan_key = key
        return self._plan
