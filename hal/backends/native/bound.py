"""Arrays bound to the native kernels once: a sparse layer's plan, the transform's basis
workspace and a dictionary bound for encodes (pointers made at binding time, so each call
passes only what changes)."""
from __future__ import annotations

import numpy as np

__all__ = ["SparseLayerPlan", "BasisWorkspace", "EncodePlan", "bad_index", "ptr"]


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


class EncodePlan:
    """A dictionary bound to the ``encode`` kernel (``correlate.c``): a whole call - the
    finiteness check, the standardization, the fixed-order correlations and Batch-OMP - is one
    kernel call, with every array but the batch and its codes bound once.  The interface of
    :class:`hal.backends.numpy.encode.EncodePlan` (the specification)."""

    def __init__(self, ffi, lib, D, G, k, tol=None, mean=None, scale=None, width=None):
        dt = D.dtype
        l, m = D.shape
        sfx = "f32" if dt == np.float32 else "f64"
        # the kernel reads the atoms as DT (m, lw), lw a whole number of vectors: a private,
        # zero-padded copy made once here
        lw = int(getattr(lib, "correlate_width_" + sfx)(l))
        self.DT = np.zeros((m, lw), dt)
        self.DT[:, :l] = D.T
        k = int(min(k, l))
        width = k if width is None else int(width)
        if width < k:
            raise ValueError(f"prepare_encode: width={width} is below k={k}")
        for name, a, shape in (("D", D, (l, m)), ("G", G, (l, l)), ("mean", mean, (m,)),
                               ("scale", scale, (m,))):
            if a is not None and (a.dtype != dt or a.shape != shape
                                  or not a.flags.c_contiguous):
                raise ValueError(f"prepare_encode: {name} should be C-contiguous {dt} of "
                                 f"shape {shape}, got {a.dtype} {a.shape}")
        self.D, self.G, self.mean, self.scale = D, G, mean, scale
        self.dtype, self.l, self.m, self.k, self.width = dt, l, m, k, width
        self._ct = "float *" if dt == np.float32 else "double *"
        self._ffi = ffi
        self._fn = getattr(lib, "encode_" + sfx)
        rows = 48  # CSB in kernels.c: rows per kernel block
        kk = max(k, 1)
        self._scratch = {
            "xs": np.zeros((rows, m) if mean is not None else (1, 1), dt),
            "corr": np.zeros((rows, l), dt), "xx": np.zeros(rows, dt),
            "acc": np.zeros(int(getattr(lib, "correlate_scratch_" + sfx)(l)), dt),
            "ows": np.zeros(l + kk * l + kk * kk + 4 * kk, dt),
            "resid": np.zeros(rows, dt), "nnz": np.zeros(rows, np.int32)}
        self._keep = (self.DT, G, mean, scale)  # the memory the pointers point into
        s = self._scratch
        null = ffi.NULL
        fields = {"m": m, "l": l, "k": k, "ldo": width, "ldt": lw,
                  "tol2": -1.0 if tol is None else float(tol) ** 2,
                  "eps": float(np.finfo(dt).eps),
                  "DT": ptr(ffi, self._ct, self.DT), "G": ptr(ffi, self._ct, G),
                  "mean": null if mean is None else ptr(ffi, self._ct, mean),
                  "scale": null if scale is None else ptr(ffi, self._ct, scale)}
        for name in ("xs", "corr", "xx", "acc", "ows", "resid"):
            fields[name] = ptr(ffi, self._ct, s[name])
        fields["nnz"] = ptr(ffi, "int *", s["nnz"])
        self._ptrs = fields  # from_buffer objects own nothing but must outlive the struct
        self._plan = ffi.new(f"struct tdl_encode_{sfx} *", fields)
        # the same plan without the standardization, for rows already standardized
        fields = dict(fields, mean=null, scale=null)
        self._plan_std = self._plan if mean is None else \
            ffi.new(f"struct tdl_encode_{sfx} *", fields)
        self._int = _CTYPES[np.dtype(np.int32)]
        self._real = _CTYPES[dt]

    def encode(self, X: np.ndarray, indices: np.ndarray, values: np.ndarray,
               raw: bool = True) -> None:
        """As :meth:`hal.backends.numpy.encode.EncodePlan.encode` (the caller checked the
        arrays' shapes, dtypes and layouts)."""
        ffi = self._ffi
        n = X.shape[0]
        dep = self._fn(self._plan if raw else self._plan_std, n, ffi.from_buffer(self._real, X),
                       ffi.from_buffer(self._int, indices), ffi.from_buffer(self._real, values))
        if dep < 0:
            from ..numpy.encode import nonfinite_error
            raise nonfinite_error(X)
        if dep:
            from ..numpy.omp import warn_stopped_early
            warn_stopped_early(dep, n, self.l, self.k, self.m, stacklevel=3)
