"""The native backend's path for a dictionary stored narrower than it is computed with
(float16, or int8 with one float32 scale per atom; compute in float32).

The specification is :mod:`hal.backends.numpy.stored`, which decodes 16 atoms at a time into
a float32 tile and multiplies it.  Here the correlations run float32's own kernels
(``correlate.c``) on the atoms kept transposed in their stored dtype (``DqT``, (m, lw), the
layout of float32's ``DT``; ``stored.c``): a lone row reads them as stored, each value
decoded in a register (F16C's ``vcvtph2ps`` for float16, a sign extension and conversion for
int8, and a few of each row's vectors by exact integer operations beside them, so that the
one conversion pipe does not bound it: ``correlate.c``'s ``tdl_load_f16_scaled``), so a
one-sample encode - a matrix-vector product over the whole dictionary, bound by
the bytes it reads - reads 2 or 1 bytes per atom value instead of 4; a batch decodes each
chunk of 256 features into a float tile once per group of up to 48 rows and runs float32's
register-blocked batch kernel on it.  The atom's int8 scale multiplies the finished sum.
The transposed copy costs ``m * lw`` stored values (as the float32 kernels' ``DT`` does);
no float32 copy of the dictionary exists.

* :class:`StoredTiles`: the products the Wp test, the joins and OMP need
  (``correlate``: ``X @ D.T``; ``combine``: ``out -= W @ D``), the interface of the NumPy
  reference's tiles, and ``refresh`` (an atom rewritten: its transposed copy follows);
* :class:`StoredEncodePlan`: the execution phase's encode (finiteness check,
  standardization, correlations, Batch-OMP) in one kernel call, as
  :class:`~hal.backends.native.bound.EncodePlan` for float atoms;
* :class:`StoredBasisWorkspace`: the NumPy reference's workspace (its Wp test and joins, in
  Python) on those two.

Tolerance against the NumPy reference (tests/backend/test_native_stored.py): correlations
``|got - ref| <= 1e-5 * (|X| @ |decode(D)|.T)`` (other summation order; the int8 scale is
applied after the sum instead of to each decoded value).  Each correlation is summed in a
fixed order of its own (``correlate.c``'s), so results do not depend on the batch split.
"""
from __future__ import annotations

import numpy as np

from ..numpy.stored import StoredBasisWorkspace as _Reference
from .bound import ptr, raw_from_buffer, transposed_zeros

__all__ = ["StoredTiles", "StoredEncodePlan", "StoredBasisWorkspace", "KINDS"]

#: the storage dtypes the kernels read, and their kind number in ``stored.c``
#: (``correlate.c``'s KIND; 0 is the compute type itself)
KINDS = {np.dtype(np.float16): 1, np.dtype(np.int8): 2}
#: rows per kernel block of stored_encode (CSB in kernels.c)
_ROWS = 48


def _rows_ok(a: np.ndarray) -> bool:
    """Rows at any stride, values contiguous within a row (what the kernels take)."""
    return a.dtype == np.float32 and a.ndim == 2 and (a.size == 0 or (
        (a.shape[0] <= 1 or a.strides[0] % 4 == 0) and (a.shape[1] <= 1 or a.strides[1] == 4)))


class StoredTiles:
    """The products with stored atoms ``Dq`` (lb, m) (float16, or int8 with ``scale`` (lb,)
    float32), computed in float32 by ``stored.c``; the interface of
    :class:`hal.backends.numpy.stored._Tiles`."""

    def __init__(self, ffi, lib, Dq, scale):
        if Dq.dtype not in KINDS or Dq.ndim != 2 or not Dq.flags.c_contiguous:
            raise ValueError(f"stored atoms should be a C-contiguous float16 or int8 matrix, "
                             f"got {Dq.dtype} {Dq.shape}")
        if (Dq.dtype == np.int8) != (scale is not None) or (
                scale is not None and (scale.dtype != np.float32 or scale.shape != Dq.shape[:1]
                                       or not scale.flags.c_contiguous)):
            raise ValueError(f"int8 atoms need one C-contiguous float32 scale per atom "
                             f"({Dq.shape[0]},), float16 atoms none")
        self.Dq, self.scale = Dq, scale
        self.dtype = np.dtype(np.float32)
        self.kind = KINDS[Dq.dtype]
        self._ffi, self._lib = ffi, lib
        self._dq = ffi.from_buffer("char[]", Dq)
        self._sc = ffi.NULL if scale is None else ptr(ffi, None, scale)
        # the atoms transposed, as correlate.c reads them (padding columns zero)
        lb, m = Dq.shape
        self.DqT = transposed_zeros(lib, m, lb, np.float32, Dq.dtype)
        self.DqT[:, :lb] = Dq.T
        self._dqt = ffi.from_buffer("char[]", self.DqT)
        # the kernel's scratch, for as many atoms as are stored: one row's accumulators
        # until a call of more rows grows it (a batch group's, and a decoded tile)
        self.rows = 0
        self.scratch(1)

    def scratch(self, n: int):
        """The kernel's scratch for calls of ``n`` rows (grown, never shrunk; a group of
        48 rows at most): ``(pointer, rows it holds)``."""
        want = 1 if n <= 1 else min(int(n), _ROWS)
        if want > self.rows:
            lb, m = self.Dq.shape
            self.acc = np.empty(int(self._lib.stored_scratch(lb, m, want)), np.float32)
            self._acc = ptr(self._ffi, None, self.acc)
            self.rows = want
        return self._acc, self.rows

    def refresh(self, j: int) -> None:
        """Atom ``j`` of ``Dq`` (and its scale) was rewritten: its transposed copy follows."""
        self.DqT[:, j] = self.Dq[j]

    def _check(self, name, a, rows, cols):
        if not _rows_ok(a) or a.shape[0] != rows or a.shape[1] < cols:
            raise ValueError(f"stored products: {name} should be float32 rows of at least "
                             f"{cols} contiguous values ({rows} rows), got {a.dtype} {a.shape}")

    def correlate(self, X, nq, out):
        """``out[:, :nq] = X @ decode(D[:nq]).T`` (each value in a fixed order of its own)."""
        m = self.Dq.shape[1]
        if not _rows_ok(X):
            X = np.ascontiguousarray(X, np.float32)
        n = X.shape[0]
        if not 0 <= nq <= self.Dq.shape[0]:
            raise ValueError(f"stored products: {nq} atoms asked, {self.Dq.shape[0]} stored")
        self._check("X", X, n, m)
        self._check("out", out, n, nq)
        if n == 0 or nq == 0:
            return out
        fb = self._ffi.from_buffer
        acc, cap = self.scratch(n)
        self._lib.stored_correlate(n, nq, m, fb("float[]", X), X.strides[0] // 4, self._dqt,
                                   self.DqT.shape[1], self.kind, self._sc, fb("float[]", out),
                                   out.strides[0] // 4 if n > 1 else nq, acc, cap)
        return out

    def combine(self, W, nq, out):
        """``out -= W[:, :nq] @ decode(D[:nq])``, in place (one atom after the other)."""
        m = self.Dq.shape[1]
        if not _rows_ok(W):
            W = np.ascontiguousarray(W, np.float32)
        n = out.shape[0]
        self._check("W", W, n, nq)
        self._check("out", out, n, m)
        if n == 0 or nq == 0:
            return out
        fb = self._ffi.from_buffer
        self._lib.stored_combine(n, nq, m, fb("float[]", W), W.strides[0] // 4 if n > 1 else nq,
                                 self._dq, self.kind, self._sc, fb("float[]", out),
                                 out.strides[0] // 4 if n > 1 else m)
        return out


class StoredEncodePlan:
    """The first ``l`` stored atoms of ``tiles`` bound to the ``stored_encode`` kernel: a whole
    encode - finiteness check, standardization (``mean``, ``scale``), correlations from the
    stored atoms, Batch-OMP on ``G`` (the decoded atoms' Gram matrix, ``l`` x ``l`` or the
    top-left block of a larger C-contiguous float32 matrix) - in one call.  The interface of
    :class:`hal.backends.numpy.encode.EncodePlan`."""

    def __init__(self, tiles, l, G, k, tol=None, mean=None, scale=None, width=None):
        ffi, lib = tiles._ffi, tiles._lib
        m = tiles.Dq.shape[1]
        dt = np.dtype(np.float32)
        l = int(l)
        k = int(min(k, l))
        width = k if width is None else int(width)
        if width < k:
            raise ValueError(f"prepare_encode: width={width} is below k={k}")
        if not 0 < l <= tiles.Dq.shape[0]:
            raise ValueError(f"prepare_encode: {l} atoms asked, {tiles.Dq.shape[0]} stored")
        if G.dtype != dt or G.ndim != 2 or G.shape[0] < l or G.shape[1] < l \
                or not G.flags.c_contiguous:
            raise ValueError(f"prepare_encode: G should be C-contiguous float32 of at least "
                             f"({l}, {l}), got {G.dtype} {G.shape}")
        for name, a in (("mean", mean), ("scale", scale)):
            if a is not None and (a.dtype != dt or a.shape != (m,) or not a.flags.c_contiguous):
                raise ValueError(f"prepare_encode: {name} should be C-contiguous float32 of "
                                 f"shape ({m},), got {a.dtype} {a.shape}")
        self.tiles, self.G, self.mean, self.scale = tiles, G, mean, scale
        self.dtype, self.l, self.m, self.k, self.width = dt, l, m, k, width
        self.D = None
        kk = max(k, 1)
        # scratch the kernel writes before it reads
        s = self._scratch = {
            "xs": np.empty((_ROWS, m) if mean is not None else (1, 1), dt),
            "corr": np.empty((_ROWS, l), dt), "xx": np.empty(_ROWS, dt),
            "ows": np.empty(l + kk * l + kk * kk + 4 * kk, dt),
            "resid": np.empty(_ROWS, dt), "nnz": np.empty(_ROWS, np.int32)}
        null = ffi.NULL
        fields = {"m": m, "l": l, "k": k, "ldo": width, "ldg": G.shape[1], "kind": tiles.kind,
                  "ldt": tiles.DqT.shape[1], "DqT": tiles._dqt,
                  "tol2": -1.0 if tol is None else float(tol) ** 2,
                  "eps": float(np.finfo(dt).eps), "ascale": tiles._sc,
                  "G": ptr(ffi, None, G),
                  "mean": null if mean is None else ptr(ffi, None, mean),
                  "scale": null if scale is None else ptr(ffi, None, scale),
                  "nnz": ptr(ffi, None, s["nnz"])}
        fields["acc"], fields["rows"] = tiles.scratch(1)  # shared: one call at a time
        for name in ("xs", "corr", "xx", "ows", "resid"):
            fields[name] = ptr(ffi, None, s[name])
        self._ptrs = fields  # the pointers' owners live as long as the plan
        self._plan = ffi.new("struct tdl_stored *", fields)
        self._plan_std = self._plan if mean is None else \
            ffi.new("struct tdl_stored *", dict(fields, mean=null, scale=null))
        self._fn = lib.stored_encode
        self._ft, self._it = ffi.typeof("float[]"), ffi.typeof("int[]")
        self._rfb = raw_from_buffer(ffi)  # (~1 us of a one-sample encode)

    def kernel_rows(self):
        """The encode of one raw row as a kernel call for a caller to make itself (a
        one-row ``transform`` / ``transform_into``): ``(fn, plan, real, int, rfb)``, as
        :meth:`hal.backends.native.bound.EncodePlan.kernel_rows` - ``fn(plan, 1, rfb(real, X,
        False), rfb(int, indices, True), rfb(real, values, True))`` returns the samples OMP
        stopped early, or a negative number (nothing written) for a NaN or Inf.  One row
        only: the bound scratch holds at least one row (:meth:`encode` grows it for more)."""
        return self._fn, self._plan, self._ft, self._it, self._rfb

    def encode(self, X: np.ndarray, indices: np.ndarray, values: np.ndarray,
               raw: bool = True) -> None:
        """As :meth:`hal.backends.numpy.encode.EncodePlan.encode` (C-contiguous float32 rows
        in, C-contiguous (n, width) codes out; the caller checked them)."""
        fb, ft = self._rfb, self._ft
        if X.dtype != np.float32 or not X.flags.c_contiguous:
            X = np.ascontiguousarray(X, np.float32)
        n = X.shape[0]
        if n > self._plan.rows and self._plan.rows < _ROWS:  # a batch: the group scratch
            acc, rows = self.tiles.scratch(n)
            self._ptrs["acc"] = acc  # kept alive while the structs point into it
            for plan in {id(p): p for p in (self._plan, self._plan_std)}.values():
                plan.acc, plan.rows = acc, rows
        dep = self._fn(self._plan if raw else self._plan_std, n, fb(ft, X, False),
                       fb(self._it, indices, False), fb(ft, values, False))
        if dep < 0:
            from ..numpy.encode import nonfinite_error
            raise nonfinite_error(X)
        if dep:
            from ..numpy.omp import warn_stopped_early
            warn_stopped_early(dep, n, self.l, self.k, self.m)


class StoredBasisWorkspace(_Reference):
    """:class:`hal.backends.numpy.stored.StoredBasisWorkspace` with the products of
    ``stored.c`` (:class:`StoredTiles`) and the one-call encode (:class:`StoredEncodePlan`);
    float32 compute (``G``, ``Li``)."""

    def __init__(self, backend, Dq, scale, G, Li):
        if G.dtype != np.float32:
            raise ValueError(f"the native stored-atom kernels compute in float32, got {G.dtype}")
        super().__init__(backend, Dq, scale, G, Li)

    def _make_tiles(self, backend, Dq, scale, dt):
        return StoredTiles(backend._nffi, backend._nlib, Dq, scale)

    def exec_plan(self, n, k, tol=None, width=None, mean=None, scale=None):
        """:meth:`plan`: the native backend's own plans are its per-row kernels (it is not
        ``compiled_execution``), where the inherited ``exec_plan`` comes back after a lookup
        per call (~1 us of a one-sample transform)."""
        return self.plan(n, k, tol, width, mean, scale)

    def _make_plan(self, nd, k, tol, mean, scale, width):
        # G shared, not copied: a join makes a new plan (the key holds the atom count)
        return StoredEncodePlan(self._tiles, nd, self.G, k, tol=tol, mean=mean, scale=scale,
                                width=width)
