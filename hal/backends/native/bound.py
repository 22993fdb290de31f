"""Arrays bound to the native kernels once: a sparse layer's plan, the transform's basis
workspace and a dictionary bound for encodes (pointers made at binding time, so each call
passes only what changes)."""
from __future__ import annotations

import numpy as np

__all__ = ["SparseLayerPlan", "BasisWorkspace", "EncodePlan", "PredictPlan", "aligned_zeros",
           "transposed_zeros", "bad_index", "ptr"]


def bad_index(idx: np.ndarray, pos: int, rows: int) -> IndexError:
    """The error for a kernel's report of an index outside [-1, rows) (nothing was written)."""
    i, t = divmod(pos - 1, idx.shape[1])
    return IndexError(f"code indices must lie in [-1, {rows}), got {int(idx[i, t])} at "
                      f"({i}, {t})")


_CTYPES = {np.dtype(np.float32): "float[]", np.dtype(np.float64): "double[]",
           np.dtype(np.int32): "int[]"}


def ptr(ffi, _ctype, a: np.ndarray):
    """A C pointer into a C-contiguous array (``_ctype`` is documentation only;
    ``from_buffer``: ~4x cheaper than casting ``__array_interface__``'s address, which
    matters for the trainer's small products)."""
    return ffi.from_buffer(_CTYPES[a.dtype], a)


def aligned_zeros(shape, dtype, align: int = 64) -> np.ndarray:
    """A zeroed C-contiguous array whose first byte sits on an ``align``-byte boundary (a
    cache line).  NumPy places a large array 16 bytes past a page (its allocator's header):
    with rows a whole number of vectors long, every 32-byte load of the transposed atoms then
    sat 16 bytes off a vector boundary and every other one straddled two cache lines, which
    a lone sample's pass over DT (bound by the transfer of DT) paid for: measured at m=5625,
    l=100, a bare loop of correlate.c's lone-sample block over DT 16 bytes off a line took
    12% longer than over DT on a line."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.zeros(nbytes + align, np.uint8)
    off = -buf.ctypes.data % align
    return buf[off:off + nbytes].view(dtype).reshape(shape)


def transposed_zeros(lib, rows: int, l: int, dtype, storage=None) -> np.ndarray:
    """Zeros for ``l`` atoms transposed as ``correlate.c`` reads them: ``(rows,
    correlate_width(l))`` (a whole number of vectors a row) for the ``dtype`` kernels, in
    ``storage`` (default ``dtype``; float16 / int8 for stored atoms), on a cache line
    (:func:`aligned_zeros`)."""
    sfx = "f32" if np.dtype(dtype) == np.float32 else "f64"
    lw = int(getattr(lib, "correlate_width_" + sfx)(l))
    return aligned_zeros((rows, lw), dtype if storage is None else storage)


def raw_from_buffer(ffi):
    """cffi's ``from_buffer`` without its Python wrapper's per-call type lookup (~0.6 us of a
    one-row call, measured), called as ``f(ctype, array, False)``; the documented
    ``ffi.from_buffer`` (the same arguments) where the backend lacks it."""
    return getattr(getattr(ffi, "_backend", None), "from_buffer", None) or ffi.from_buffer


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


class EncodePlan:
    """A dictionary bound to the ``encode`` kernel (``correlate.c``): a whole call - the
    finiteness check, the standardization, the fixed-order correlations and Batch-OMP - is one
    kernel call, with every array but the batch and its codes bound once.  The interface of
    :class:`hal.backends.numpy.encode.EncodePlan` (the specification).

    Built from ``D`` (l, m) - the kernel's own zero-padded copy of ``D.T`` is made - or, with
    ``DT`` (m, ldt) given, over that array's first ``l`` columns (the streaming transform's
    state, shared, nothing copied).  ``G``'s rows may be longer than ``l`` (its first ``l``
    columns are read)."""

    def __init__(self, ffi, lib, D, G, k, tol=None, mean=None, scale=None, width=None,
                 DT=None, l=None):
        dt = G.dtype
        sfx = "f32" if dt == np.float32 else "f64"
        if DT is None:
            l, m = D.shape
            if D.dtype != dt:
                raise ValueError(f"prepare_encode: D is {D.dtype}, G {dt}")
            # the kernel reads the atoms as DT (m, lw), lw a whole number of vectors: a
            # private, zero-padded copy made once here
            DT = transposed_zeros(lib, m, l, dt)
            DT[:, :l] = D.T
        m = DT.shape[0] if D is not None else DT.shape[0] - 1  # (see BasisWorkspace.DT)
        from ..numpy.omp import check_tol
        check_tol(tol)
        k = int(min(k, l))
        width = k if width is None else int(width)
        if width < k:
            raise ValueError(f"prepare_encode: width={width} is below k={k}")
        for name, a, shape in (("G", G, (G.shape[0], G.shape[1])), ("mean", mean, (m,)),
                               ("scale", scale, (m,)), ("DT", DT, DT.shape)):
            if a is not None and (a.dtype != dt or a.shape != shape
                                  or not a.flags.c_contiguous):
                raise ValueError(f"prepare_encode: {name} should be C-contiguous {dt} of "
                                 f"shape {shape}, got {a.dtype} {a.shape}")
        if G.shape[0] < l or G.shape[1] < l:
            raise ValueError(f"prepare_encode: G {G.shape} is smaller than {l} atoms")
        self.DT, self.G, self.mean, self.scale = DT, G, mean, scale
        self.dtype, self.l, self.m, self.k, self.width = dt, l, m, k, width
        self._ct = "float *" if dt == np.float32 else "double *"
        self._ffi = ffi
        self._fn, self._fn1, self._sfx = getattr(lib, "encode_" + sfx), getattr(
            lib, "encode1_" + sfx), sfx
        rows = 48  # CSB in kernels.c: rows per kernel block
        kk = max(k, 1)
        # scratch the kernel writes before it reads (uninitialized: a plan is made at every
        # join while the dictionary fills, and zeroing a (48, m) block cost more than the join)
        self._scratch = {
            "xs": np.empty((rows, m) if mean is not None else (1, 1), dt),
            "corr": np.empty((rows, l), dt), "xx": np.empty(rows, dt),
            "acc": np.empty(int(getattr(lib, "correlate_scratch_" + sfx)(l)), dt),
            "ows": np.empty(l + kk * l + kk * kk + 4 * kk, dt),
            "resid": np.empty(rows, dt), "nnz": np.empty(rows, np.int32)}
        s = self._scratch
        null = ffi.NULL
        fields = {"m": m, "l": l, "k": k, "ldo": width, "ldt": DT.shape[1],
                  "ldg": G.shape[1], "tol2": -1.0 if tol is None else float(tol) ** 2,
                  "eps": float(np.finfo(dt).eps),
                  "DT": ptr(ffi, self._ct, DT), "G": ptr(ffi, self._ct, G),
                  "mean": null if mean is None else ptr(ffi, self._ct, mean),
                  "scale": null if scale is None else ptr(ffi, self._ct, scale)}
        for name in ("xs", "corr", "xx", "acc", "ows", "resid"):
            fields[name] = ptr(ffi, self._ct, s[name])
        fields["nnz"] = ptr(ffi, "int *", s["nnz"])
        self._ptrs = fields  # the pointers' owners live as long as the plan
        self._plan = ffi.new(f"struct tdl_encode_{sfx} *", fields)
        # the same plan without the standardization, for rows already standardized
        self._plan_std = self._plan if mean is None else \
            ffi.new(f"struct tdl_encode_{sfx} *", dict(fields, mean=null, scale=null))
        self._rt, self._it = ffi.typeof(_CTYPES[dt]), ffi.typeof("int[]")
        self._rfb = raw_from_buffer(ffi)

    def encode(self, X: np.ndarray, indices: np.ndarray, values: np.ndarray,
               raw: bool = True) -> None:
        """As :meth:`hal.backends.numpy.encode.EncodePlan.encode`.  The arrays' shapes,
        dtypes and layouts are checked here (the kernel would read or write past them);
        :meth:`encode_rows` and :meth:`rows_into`, the transform's hot paths, leave that to
        their caller."""
        n = X.shape[0] if getattr(X, "ndim", 0) == 2 else -1
        for name, a, shape, dt in (("X", X, (n, self.m), self.dtype),
                                   ("indices", indices, (n, self.width), np.dtype(np.int32)),
                                   ("values", values, (n, self.width), self.dtype)):
            if not isinstance(a, np.ndarray) or a.shape != shape or a.dtype != dt \
                    or not a.flags.c_contiguous:
                raise ValueError(f"encode: {name} should be C-contiguous {dt} of shape "
                                 f"{shape if n >= 0 else '(n, ' + str(shape[1]) + ')'}, got "
                                 f"{getattr(a, 'dtype', type(a).__name__)} "
                                 f"{getattr(a, 'shape', '')}")
        if not self.encode_rows(X, indices, values, raw):
            from ..numpy.encode import nonfinite_error
            raise nonfinite_error(X)

    def rows_into(self, indices, values, one: bool = False):
        """:meth:`encode_rows` of raw rows into the fixed ``indices`` / ``values`` (at least
        as many rows as any ``X`` passed; their pointers made once here): ``call(X)``, the
        streaming transform's steady state fed a row at a time (partial_fit's codes go to
        scratch nobody reads), a kernel call and nothing else per row.  ``one``: ``X`` is
        always one row (1, m), the kernel's row count bound (a one-row partial_fit, see
        :meth:`hal.backends.numpy.basis.BasisWorkspace.runner`).  The call keeps the plan
        alive (its struct points into the plan's scratch)."""
        fn, plan, rfb, real = self._fn, self._plan, self._rfb, self._rt
        pi, pv = self._ffi.from_buffer("int[]", indices), self._ffi.from_buffer(
            _CTYPES[self.dtype], values)
        l, k, m = self.l, self.k, self.m
        from ..numpy.omp import kernel_coded

        def call(X) -> bool:
            dep = fn(plan, X.shape[0], rfb(real, X, False), pi, pv)
            return not dep or kernel_coded(dep, X.shape[0], l, k, m)

        # one row: the plan and the codes' pointers bound in a struct of their own, so that
        # each call passes two arguments (encode1)
        b1 = self._ffi.new(f"struct tdl_encode1_{self._sfx} *", {"p": plan, "idx": pi,
                                                                  "val": pv})
        fn1 = self._fn1

        def call1(X) -> bool:
            dep = fn1(b1, rfb(real, X, False))
            return not dep or kernel_coded(dep, 1, l, k, m)
        call = call1 if one else call
        call.keep = (self, indices, values, pi, pv, b1)  # what its pointers point into
        if one:  # the call inlined by a caller (see BasisWorkspace.runner's steady_row)
            call.kernel, call.rfb = (fn1, b1, real), rfb
        return call

    def row_into(self, indices, values):
        """``rows_into(indices, values, one=True)``: the call for exactly one row."""
        return self.rows_into(indices, values, one=True)

    def kernel_rows(self):
        """:meth:`encode_rows` of raw rows as a kernel call for a caller to make itself:
        ``(fn, plan, real, int, rfb)``, ``fn(plan, n, rfb(real, X, False), rfb(int,
        indices, True), rfb(real, values, True))`` returns the samples OMP stopped early, or
        a negative number (nothing written) for a NaN or Inf (``rfb`` refuses an array
        that is not C-contiguous, or read-only where True is passed)."""
        return self._fn, self._plan, self._rt, self._it, self._rfb

    def encode_rows(self, X, indices, values, raw: bool = True) -> bool:
        """:meth:`encode`, returning False for an ``X`` with a NaN or Inf (nothing written)
        instead of raising: the streaming transform's steady state codes a conforming raw
        batch through it in one kernel call (:meth:`hal.backends.numpy.basis.BasisWorkspace
        .runner`)."""
        fb, real = self._rfb, self._rt
        n = X.shape[0]
        dep = self._fn(self._plan if raw else self._plan_std, n, fb(real, X, False),
                       fb(self._it, indices, False), fb(real, values, False))
        if dep:
            from ..numpy.omp import kernel_coded
            return kernel_coded(dep, n, self.l, self.k, self.m)
        return True


class BasisWorkspace:
    """The streaming transform's state bound to the ``stream`` kernel (``stream.c``): a batch
    of Algorithm 2 - the Wp tests, the joins, the OMP codes - in one call.  The interface of
    :class:`hal.backends.numpy.basis.BasisWorkspace` (the specification).  Keeps the atoms
    transposed as well (``DT``, (m, lw), the layout the correlation kernel reads), filled from
    ``D`` here and appended to by every join."""

    def __init__(self, ffi, lib, D, G, Li):
        dt = D.dtype
        lb, m = D.shape
        for name, a, shape in (("D", D, (lb, m)), ("G", G, (lb, lb)), ("Li", Li, (lb, lb))):
            if a.dtype != dt or a.shape != shape or not a.flags.c_contiguous \
                    or dt not in (np.float32, np.float64):
                raise ValueError(f"prepare_basis: {name} should be C-contiguous {dt} of shape "
                                 f"{shape}, got {a.dtype} {a.shape}")
        self.dtype, self.m, self.lb = dt, m, lb
        self.D, self.G, self.Li = D, G, Li
        sfx = "f32" if dt == np.float32 else "f64"
        self._sfx, self._ct, self._ffi, self._lib = sfx, _CTYPES[dt], ffi, lib
        # one zero row past the end: the correlations of atoms that joined within a block are
        # read from column n0 on, whole vectors at a time, which may run past a row's end
        self.DT = transposed_zeros(lib, m + 1, lb, dt)
        self.DT[:m, :lb] = D.T
        rows = 48  # CSB in kernels.c
        self._scratch = {"c": np.zeros(lb, dt), "z": np.zeros(lb, dt), "w": np.zeros(lb, dt),
                         "r": np.zeros(m, dt), "corr": np.zeros((rows, lb), dt),
                         "xx": np.zeros(rows, dt), "resid": np.zeros(rows, dt),
                         "acc": np.zeros(int(getattr(lib, "correlate_scratch_" + sfx)(lb)),
                                         dt),
                         "nnz": np.zeros(rows, np.int32)}
        self._ows = None
        null = ffi.NULL
        self._fields = {"m": m, "lb": lb, "ldt": self.DT.shape[1], "k": 1, "ldo": 1, "dep": 0,
                        "xs_rows": 0, "refine2": 0.0, "tol2": -1.0,
                        "eps": float(np.finfo(dt).eps), "xs": null, "mean": null,
                        "scale": null}
        for name, a in (("D", D), ("DT", self.DT), ("G", G), ("Li", Li)):
            self._fields[name] = ptr(ffi, None, a)
        for name, a in self._scratch.items():
            self._fields[name] = ptr(ffi, None, a)
        self._s = None
        self._stream = getattr(lib, "stream_" + sfx)
        self._stream_raw = getattr(lib, "stream_raw_" + sfx)
        self._wp_rows = getattr(lib, "wp_rows_" + sfx)
        self._plan = None
        self._plan_key = None

    def _bind(self, k: int, width: int, tol) -> None:
        """The kernel's struct for ``k`` non-zeros (its OMP scratch sized for them)."""
        lb = self.lb
        kk = max(min(int(k), lb), 1)
        need = lb + kk * lb + kk * kk + 4 * kk
        if self._ows is None or self._ows.size < need:
            self._ows = np.zeros(need, self.dtype)
            self._fields["ows"] = ptr(self._ffi, None, self._ows)
            self._s = None
        if self._s is None:
            self._s = self._ffi.new(f"struct tdl_stream_{self._sfx} *", self._fields)
        s = self._s
        s.k, s.ldo = int(k), int(width)
        s.tol2 = -1.0 if tol is None else float(tol) ** 2

    def run(self, n, lmax, rows, idx, val, thr, k, tol=None, refine2=None):
        from ..numpy.basis import REFINE_WP2
        ffi = self._ffi
        self._bind(k, idx.shape[1], tol)
        self._s.refine2 = REFINE_WP2 if refine2 is None else float(refine2)
        N = rows.shape[0]
        n = int(self._stream(self._s, n, lmax, N, ffi.from_buffer(self._ct, rows), float(thr),
                             ffi.from_buffer("int[]", idx), ffi.from_buffer(self._ct, val)))
        dep = int(self._s.dep)
        if dep:
            from ..numpy.omp import warn_stopped_early
            warn_stopped_early(dep, N, n, k, self.m)
        return n

    def runner(self, lmax, k, tol, thr, refine2, width, rows, mean=None, scale=None):
        """``run`` on up to ``rows`` raw rows in one kernel call, with its parameters bound:
        ``call(X, idx, val, n)`` checks that X is finite, standardizes it (``mean``,
        ``scale``) and streams it from ``n`` atoms; returns the atoms after it, or a negative
        number (nothing done) for a non-finite X."""
        from ..numpy.basis import REFINE_WP2
        self._bind(k, width, tol)  # sizes the shared OMP scratch for k
        ffi, dt = self._ffi, self.dtype
        xs = np.empty((rows, self.m) if mean is not None else (1, 1), dt)
        fields = dict(self._fields, k=int(k), ldo=int(width),
                      tol2=-1.0 if tol is None else float(tol) ** 2,
                      refine2=REFINE_WP2 if refine2 is None else float(refine2),
                      xs_rows=int(rows), xs=ptr(ffi, None, xs))
        if mean is not None:
            fields["mean"], fields["scale"] = ptr(ffi, None, mean), ptr(ffi, None, scale)
        fn, fb, ct, m, thr = self._stream_raw, ffi.from_buffer, self._ct, self.m, float(thr)
        # codes nobody reads (partial_fit): scratch with its pointers made once, bound in
        # the struct with the other fixed arguments of stream_bound
        sidx, sval = np.empty((rows, width), np.int32), np.empty((rows, width), dt)
        psidx, psval = fb("int[]", sidx), fb(ct, sval)
        fields.update(lmax=int(lmax), thr=thr, bidx=psidx, bval=psval)
        st = ffi.new(f"struct tdl_stream_{self._sfx} *", fields)
        keep = (xs, mean, scale, fields, self._ows, sidx, sval)  # what its pointers point into
        bound = getattr(self._lib, "stream_bound_" + self._sfx)
        fbt, rfb = ffi.typeof(ct), raw_from_buffer(ffi)

        def call(X, idx, val, n):
            """``idx`` None: the codes go to the runner's scratch (not returned)."""
            if idx is None:
                r = fn(st, n, lmax, X.shape[0], fb(ct, X), thr, psidx, psval)
            else:
                r = fn(st, n, lmax, X.shape[0], fb(ct, X), thr, fb("int[]", idx), fb(ct, val))
            if st.dep and r >= 0:
                from ..numpy.omp import warn_stopped_early
                warn_stopped_early(int(st.dep), X.shape[0], r, k, m)
            return r

        def lean(X, n):
            """``call(X, None, None, n)`` in a four-argument kernel call."""
            r = bound(st, n, X.shape[0], rfb(fbt, X, False))
            if st.dep and r >= 0:
                from ..numpy.omp import warn_stopped_early
                warn_stopped_early(int(st.dep), X.shape[0], r, k, m)
            return r

        def steady_row():
            """``row(X) -> bool`` for one raw conforming row (1, m) once the state holds
            ``lmax`` atoms: ``lean(X, lmax) >= 0`` in a two-argument call (``stream1``;
            False: a NaN or Inf, nothing done); ``row.codes``: the (1, width) scratch its
            codes go to; ``row.kernel`` / ``row.rfb``: its kernel call, for a caller to
            make itself."""
            lm = int(lmax)
            one = getattr(self._lib, "stream1_" + self._sfx)

            def row(X) -> bool:
                dep = one(st, rfb(fbt, X, False))
                if dep:
                    from ..numpy.omp import kernel_coded
                    return kernel_coded(dep, 1, lm, k, m)
                return True
            row.keep = keep
            row.codes = (sidx[:1], sval[:1])  # where its codes go (scratch)
            # the call inlined by a caller: fn(struct, rfb(ctype, X, False)) -> < 0 for a
            # NaN or Inf, else the samples OMP stopped early
            row.kernel, row.rfb = (one, st, fbt), rfb
            return row
        call.keep = keep
        call.lean = lean
        call.steady_row = steady_row
        call.rows = int(rows)  # the most rows per call (its standardization buffer)
        return call

    def wp(self, n, X):
        self._bind(1, 1, None)
        self._s.refine2 = 2.0  # the explicit residual for every row (Wp^2 <= 1)
        out = np.empty(X.shape[0], self.dtype)
        X = np.ascontiguousarray(X)
        self._wp_rows(self._s, n, X.shape[0], self._ffi.from_buffer(self._ct, X),
                      self._ffi.from_buffer(self._ct, out))
        return out

    def plan(self, n, k, tol=None, width=None, mean=None, scale=None):
        """The encode plan over the first ``n`` atoms of this state (``DT`` and ``G`` shared,
        nothing copied), made once per dictionary size and parameters."""
        key = (n, k, tol, width, mean is not None)
        if self._plan_key != key or (mean is not None and self._plan.mean is not mean):
            self._plan = None
            self._plan = EncodePlan(self._ffi, self._lib, None, self.G, min(k, n), tol=tol,
                                    mean=mean, scale=scale, width=width, DT=self.DT, l=n)
            self._plan_key = key
        return self._plan


_LAYER_KINDS = {"dense": 0, "relu": 1, "tanh": 2, "sigmoid": 3}


class PredictPlan:
    """A learner's one-sample predict bound to the ``predict1`` kernel (``predict.c``): the
    finiteness check, the standardization (``mean``, ``scale``), the correlations and OMP of
    ``encode`` on the atoms of ``plan`` (an :class:`EncodePlan` without statistics of its own:
    its dictionary, Gram matrix and scratch are shared), the code scale, the network's first
    layer fed the codes (the ``gather`` arithmetic) and its other layers, in one call.

    ``layers``: ``("dense", W, b)`` first (W (rows, q0): the codes' layer), then
    ``("dense", W, b)``, ``("relu",)``, ``("tanh",)`` or ``("sigmoid",)``, arrays C-contiguous
    of the plan's dtype (kept, read at each call).  :attr:`out` (1, n_outputs) receives the
    outputs."""

    def __init__(self, ffi, lib, plan, mean, scale, code_scale, layers):
        dt = plan.dtype
        m = plan.m
        if plan.mean is not None:
            raise ValueError("prepare_predict: the encode plan standardizes already")
        for name, a in (("mean", mean), ("scale", scale)):
            if a is not None and (a.dtype != dt or a.shape != (m,) or not a.flags.c_contiguous):
                raise ValueError(f"prepare_predict: {name} should be C-contiguous {dt} of shape "
                                 f"({m},), got {a.dtype} {a.shape}")
        sfx = "f32" if dt == np.float32 else "f64"
        ct = _CTYPES[dt]
        keep = [plan, mean, scale]
        fields = dict(plan._ptrs)
        if mean is not None:
            xs = np.empty((1, m), dt)
            keep.append(xs)
            fields.update(mean=ptr(ffi, ct, mean), scale=ptr(ffi, ct, scale), xs=ptr(ffi, ct, xs))
        self._enc = ffi.new(f"struct tdl_encode_{sfx} *", fields)
        specs = ffi.new(f"struct tdl_layer_{sfx}[]", len(layers))
        h, n_in = None, plan.l
        for i, layer in enumerate(layers):
            kind = _LAYER_KINDS[layer[0]]
            if (i == 0) != (kind == 0 and h is None):
                raise ValueError("prepare_predict: the first layer must be dense (the codes')")
            if kind == 0:
                W, b = layer[1], layer[2]
                rows, q = W.shape
                if i and rows != n_in or W.dtype != dt or b.shape != (q,) or b.dtype != dt \
                        or not (W.flags.c_contiguous and b.flags.c_contiguous):
                    raise ValueError(f"prepare_predict: layer {i}: W {W.dtype} {W.shape} and "
                                     f"b {b.dtype} {b.shape} do not take {n_in} inputs")
                h = np.zeros(q, dt)
                keep += [W, b, h]
                specs[i].W, specs[i].b = ptr(ffi, ct, W), ptr(ffi, ct, b)
                specs[i].n_in, n_in = rows, q
            else:
                specs[i].n_in = n_in
            specs[i].kind, specs[i].n_out = kind, n_in
            specs[i].y = ptr(ffi, ct, h)  # activations work in place
        self.out = h.reshape(1, -1)
        self._specs, self._keep = specs, keep
        self._p = ffi.new(f"struct tdl_predict_{sfx} *", {
            "enc": self._enc, "layers": specs, "n_layers": len(layers), "dep": 0,
            "code_scale": float(code_scale)})
        self._fn, self._fn1 = getattr(lib, "predict1_" + sfx), getattr(lib, "predict1b_" + sfx)
        self._ffi, self._sfx = ffi, sfx
        self._fb, self._real, self._int = ffi.from_buffer, ct, _CTYPES[np.dtype(np.int32)]
        # the row's pointer by raw_from_buffer, and the outputs' pointers made once for the
        # arrays last passed (a caller's fixed buffers: OneSample's)
        self._xt = ffi.typeof(ct)
        self._rfb = raw_from_buffer(ffi)
        self._outs = None
        self.dtype, self.m, self.k, self.l, self.width = dt, m, plan.k, plan.l, plan.width
        self.nbytes = int(sum(a.nbytes for a in keep[3:]))

    def predict(self, x, indices, values) -> int:
        """The index of the largest output for one raw row ``x`` (1, m) (the outputs in
        :attr:`out`, the scaled codes in ``indices`` and ``values``, (1, width)), or -1 for a
        row with a NaN or Inf (nothing written).  The caller checked the arrays."""
        o = self._outs
        if o is None or o[0] is not indices or o[1] is not values:
            fb = self._fb
            o = self._outs = (indices, values, fb(self._int, indices), fb(self._real, values))
        r = self._fn(self._p, self._rfb(self._xt, x, False), o[2], o[3])
        if r < 0:
            return -1
        if self._p.dep:
            from ..numpy.omp import warn_stopped_early
            warn_stopped_early(1, 1, self.l, self.k, self.m)
        return r

    def kernel(self, indices, values):
        """:meth:`predict` into the fixed ``indices`` / ``values`` as a kernel call for a
        caller to make itself: ``(fn, b, ctype, rfb, p)``, ``fn(b, rfb(ctype, x, False))``
        returns what :meth:`predict` does but -1 (any negative number for a NaN or Inf), and
        ``p.dep`` is true where OMP stopped early.  Two arguments a call (``predict1b``); the
        struct is kept with the plan."""
        fb = self._fb
        pi, pv = fb(self._int, indices), fb(self._real, values)
        b = self._ffi.new(f"struct tdl_predict1_{self._sfx} *", {"p": self._p, "idx": pi,
                                                                   "val": pv})
        self._keep += [indices, values, pi, pv, b]
        return self._fn1, b, self._xt, self._rfb, self._p
