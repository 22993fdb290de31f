"""Arrays bound to the native kernels once: a sparse layer's plan and the transform's basis
workspace (pointers made at binding time, so each call passes only what changes)."""
from __future__ import annotations

import numpy as np

__all__ = ["SparseLayerPlan", "BasisWorkspace", "bad_index", "ptr"]


def bad_index(idx: np.ndarray, pos: int, rows: int) -> IndexError:
    """The error for a kernel's report of an index outside [-1, rows) (nothing was written)."""
    i, t = divmod(pos - 1, idx.shape[1])
    return IndexError(f"code indices must lie in [-1, {rows}), got {int(idx[i, t])} at "
                      f"({i}, {t})")


_CTYPES = {np.dtype(np.float32): "float[]", np.dtype(np.float64): "double[]",
           np.dtype(np.int32): "int[]"}


def ptr(ffi, _ctype, a: np.ndarray):
    """A C pointer into a C-contiguous array (``from_buffer``: ~4x cheaper than casting
    ``__array_interface__``'s address, which matters for the trainer's small products)."""
    return ffi.from_buffer(_CTYPES[a.dtype], a)


class SparseLayerPlan:
    """A dense layer fed compact codes, bound to its arrays (W (rows, q), b (q,), the output
    workspace y (batch, q) and the gradients gW, gb): forward and backward are one kernel call
    each, with pointers made once (the per-call cost of a cffi call with fresh pointers was
    most of these small products' time).  Results within the backend's ``rtol`` of
    :class:`hal.backend.SparseLayerPlan` (the bias is added in another order)."""

    def __init__(self, ffi, lib, W, b, y, gW, gb):
        dt = W.dtype
        rows, q = W.shape
        for name, a, shape in (("b", b, (q,)), ("gW", gW, (rows, q)), ("gb", gb, (q,))):
            if a.shape != shape:
                raise ValueError(f"sparse layer: {name} should have shape {shape}, got "
                                 f"{a.shape}")
        if y.ndim != 2 or y.shape[1] != q:
            raise ValueError(f"sparse layer: y should be (batch, {q}), got {y.shape}")
        for name, a in (("W", W), ("b", b), ("y", y), ("gW", gW), ("gb", gb)):
            if a.dtype != dt or not a.flags.c_contiguous or dt not in (np.float32, np.float64):
                raise ValueError(f"sparse layer: {name} should be C-contiguous float32 or "
                                 f"float64 like W, got {a.dtype}")
        self.W, self.b, self.y, self.gW, self.gb = W, b, y, gW, gb
        self.dtype, self.rows, self.q = dt, rows, q
        sfx, ct = ("f32", "float *") if dt == np.float32 else ("f64", "double *")
        self._ffi, self._ct = ffi, ct
        self._fwd, self._bwd = getattr(lib, "layer_fwd_" + sfx), getattr(lib, "layer_bwd_" + sfx)
        self._Wp, self._bp, self._yp, self._gWp, self._gbp = (
            ptr(ffi, ct, a) for a in (W, b, y, gW, gb))

    def _codes(self, indices, values):
        if indices.dtype != np.int32 or values.dtype != self.dtype \
                or not indices.flags.c_contiguous or not values.flags.c_contiguous:
            indices = np.ascontiguousarray(indices, dtype=np.int32)
            values = np.ascontiguousarray(values, dtype=self.dtype)
        if indices.ndim != 2 or values.shape != indices.shape:
            raise ValueError(f"codes: indices and values should be (n, k) alike, got "
                             f"{indices.shape} and {values.shape}")
        return indices, values, ptr(self._ffi, "int *", indices), ptr(self._ffi, self._ct,
                                                                        values)

    def forward(self, indices, values):
        """``y[:n] = codes @ W + b``; returns that view."""
        idx, val, ip, vp = self._codes(indices, values)
        n, k = idx.shape
        if n > self.y.shape[0]:
            raise ValueError(f"batch of {n} rows, the workspace holds {self.y.shape[0]}")
        bad = self._fwd(n, k, self.q, self.rows, ip, vp, self._Wp, self._bp, self._yp)
        if bad:
            raise bad_index(idx, bad, self.rows)
        return self.y[:n]

    def backward(self, indices, values, dy):
        """``gW = codes.T @ dy``, ``gb = dy.sum(0)``."""
        idx, val, ip, vp = self._codes(indices, values)
        n, k = idx.shape
        if dy.dtype != self.dtype or not dy.flags.c_contiguous:
            dy = np.ascontiguousarray(dy, dtype=self.dtype)
        if dy.shape != (n, self.q):
            raise ValueError(f"dy should be ({n}, {self.q}), got {dy.shape}")
        bad = self._bwd(n, k, self.q, self.rows, ip, vp, ptr(self._ffi, self._ct, dy),
                        self._gWp, self._gbp)
        if bad:
            raise bad_index(idx, bad, self.rows)


class BasisWorkspace:
    """The streaming transform's state bound for the basis kernels (pointers made once: the
    per-join calls pass only the rows that change).

    Methods
    -------
    wp_row(n, x) -> (xx, pp)
        ``p = Q[:n] x`` into :attr:`p`, and ``|x|^2``, ``|p|^2``.
    append(n, a, proj, x) -> (norm, reorth, xx, pp)
        The Gram-Schmidt append of atom ``a`` as row ``n`` (see the C source); if ``x`` (the
        next row) is given, :attr:`p` and ``xx, pp`` are what ``wp_row(n + 1, x)`` would give,
        bit for bit.
    """

    def __init__(self, ffi, lib, D, Q, L, G):
        dt = D.dtype
        lb, m = D.shape
        self.dtype, self.m, self.lb = dt, m, lb
        self._arrays = (D, Q, L, G)  # keep the memory the pointers point into alive
        self.p = np.zeros(lb, dt)
        self._out = np.zeros(3, dt)
        self._ws = np.zeros(2 * m + 2 * lb, dt)
        sfx, self._ct = ("f32", "float *") if dt == np.float32 else ("f64", "double *")
        self._ffi = ffi
        self._wp_row = getattr(lib, "wp_row_" + sfx)
        self._append = getattr(lib, "append_" + sfx)
        def bind(a):
            return ptr(ffi, self._ct, a)
        self._D, self._Q, self._L, self._G = bind(D), bind(Q), bind(L), bind(G)
        self._pp, self._outp, self._wsp = bind(self.p), bind(self._out), bind(self._ws)

    def _row(self, a):
        if a.dtype != self.dtype or a.shape != (self.m,) or not a.flags.c_contiguous:
            raise ValueError(f"basis kernels need a C-contiguous {self.dtype} row of "
                             f"{self.m} values, got {a.dtype} {a.shape}")
        return ptr(self._ffi, self._ct, a)

    def wp_row(self, n: int, x: np.ndarray):
        self._wp_row(n, self.m, self._Q, self._row(x), self._pp, self._outp)
        return self._out[0], self._out[1]

    def append(self, n: int, a: np.ndarray, proj=None, x=None):
        if not 0 <= n < self.lb:
            raise ValueError(f"atom {n} does not fit the {self.lb} rows of the basis")
        null = self._ffi.NULL
        if proj is not None:
            proj = np.ascontiguousarray(proj, self.dtype)
            if proj.shape != (n,):
                raise ValueError(f"proj should have {n} values, got {proj.shape}")
        reorth = self._append(n, self.m, self.lb, self._row(a),
                              null if proj is None else ptr(self._ffi, self._ct, proj),
                              null if x is None else self._row(x), self._D, self._Q, self._L,
                              self._G, self._pp, self._outp, self._wsp)
        out = self._out
        return out[0], bool(reorth), out[1], out[2]
