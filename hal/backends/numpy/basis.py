"""The NumPy specification of the streaming transform's state (TinyDL's Algorithm 2).

The transform keeps its dictionary ``D`` (atoms as rows, unit norm), the Gram matrix
``G = D D^T`` and ``Li``, the inverse of G's Cholesky factor ``L`` (``G[:n, :n] = L L^T``,
lower triangular).  For a row ``x`` with correlations ``c = D[:n] x`` and ``z = Li c``:

    Wp^2 = 1 - |z|^2 / |x|^2            (|z|^2 = c^T G^-1 c = |projection of x on span(D)|^2)

or, where that difference cancels (``Wp^2`` below ``refine2``), the explicit residual
``|x - D^T w|^2 / |x|^2`` with ``w = Li^T z`` (the projection's coefficients).  The
correlations serve OMP too when the row does not join: one pass over the atoms per row.  A
join appends ``D[n] = x / |x|``, G's row and column (``c / |x|`` and ``d . d``) and Li's row:
with ``h = z / |x|`` (L's new row) and ``L[n, n] = Wp`` (the row's own Wp, ``>= alpha``, so L
stays well conditioned), ``Li[n, :n] = -(h Li[:n, :n]) / Wp`` and ``Li[n, n] = 1 / Wp``.  No
second dictionary-sized array (an orthonormal basis) is kept.

Every backend offers :meth:`BasisSpec.prepare_basis`; ``BasisWorkspace.run`` is Algorithm 2
on a batch (the native backend runs it in one C call, ``hal/backends/native/stream.c``).
Here the Wp test's products run on the backend's row-independent tiles (``rows_matmul``),
and the rows that do not join are coded by :meth:`BasisWorkspace.code_plan` (the native
per-row encode on a ``compiled_execution`` backend where it builds, see
:mod:`hal.execution`; else the backend's own Batch-OMP), so each row's values depend only on
that row and the state at its time: bit-identical results for any split of a stream (one
BLAS thread).
"""
from __future__ import annotations

import numpy as np

from .packed import PackedGram

__all__ = ["BasisSpec", "BasisWorkspace", "REFINE_WP2", "inverse_factor"]

#: below this Wp^2 the cheap formula 1 - |z|^2/|x|^2 loses digits: the explicit residual
REFINE_WP2 = 1e-2
#: rows per Wp test block (the backend's product tile)
_SCAN_ROWS = 16


def inverse_factor(G, dtype) -> np.ndarray:
    """``Li = L^-1`` (lower triangular, ``dtype``) of the Gram matrix ``G = L L^T`` (float64
    arithmetic), the zero atoms past the dictionary's end (G's trailing zero diagonal)
    left zero."""
    n = G.shape[0]
    while n and G[n - 1, n - 1] == 0:
        n -= 1
    Li = np.zeros(G.shape, dtype)
    if n:
        Li[:n, :n] = np.tril(np.linalg.inv(np.linalg.cholesky(G[:n, :n].astype(np.float64))))
    return Li


class BasisWorkspace:
    """The transform's state arrays bound once, with the scratch their operations need.

    Parameters
    ----------
    backend : NumpyBackend
        Runs the row-independent products (:meth:`rows_matmul`) and OMP.
    D : ndarray of shape (lb, m)
        Atoms, rows past the atoms in use zero; C-contiguous.
    G, Li : ndarray of shape (lb, lb)
        ``D D^T`` and the inverse of its Cholesky factor, zero past the atoms in use.
    """

    def __init__(self, backend, D, G, Li):
        lb, m = D.shape
        dt = D.dtype
        for name, a, shape in (("D", D, (lb, m)), ("G", G, (lb, lb)), ("Li", Li, (lb, lb))):
            if a.dtype != dt or a.shape != shape or not a.flags.c_contiguous:
                raise ValueError(f"prepare_basis: {name} should be C-contiguous {dt} of shape "
                                 f"{shape}, got {a.dtype} {a.shape}")
        self.D = D
        self._setup(backend, G, Li, dt, m, lb)

    def _setup(self, backend, G, Li, dt, m, lb, gdiag=None) -> None:
        """The state every workspace shares (this one and the stored-atom one): the Gram
        matrix, its inverse Cholesky factor and the Wp test's fixed buffers.  ``Li`` None:
        packed in ``G`` with ``gdiag`` G's diagonal (:mod:`hal.backends.numpy.packed`), or,
        with ``gdiag`` None too, dropped (``G`` the plain Gram matrix of a full
        dictionary)."""
        self.backend = backend
        self.G, self.Li = G, Li
        #: the packed G and Li while the dictionary fills (None: unpacked)
        self.packed = None
        if Li is None and gdiag is not None:
            self.packed = PackedGram(G, gdiag, backend)
        self.dtype, self.m, self.lb = dt, m, lb
        # the Wp test's block: the backend's product tile rows where it has them (a
        # small-memory plan's backend may tile fewer than 16, tinydl.lowmem.plan_backend)
        rows = int(getattr(backend, "product_rows", None) or _SCAN_ROWS)
        self._scan = rows
        # fixed buffers: the same shapes whatever the batch split
        # the Wp test's padded rows are the backend's shared input tile when it has one
        # (NumpyBackend.product_tiles: (16, m) values fewer); else a buffer of their own
        self._xb = None if hasattr(backend, "product_tiles") and rows == getattr(
            backend, "product_rows", None) else np.zeros((rows, m), dt)
        self._cflat = np.zeros(rows * lb, dt)
        self._zflat = np.zeros(rows * lb, dt)
        self._plan = None
        self._plan_key = None
        self.dependent = 0
        # the execution phase's plan on compiled per-row kernels (exec_plan), its key, and
        # the atoms transposed as those kernels read them (columns filled as atoms join)
        self._xplan = self._xkey = self._xdt = None
        self._xfilled = 0
        self._li_now = None

    # -- the Wp test ---------------------------------------------------------------------
    def _test(self, n, R, refine2):
        """Wp^2 of the rows of ``R`` (r <= 16) against the first ``n`` atoms, computed in the
        fixed-size zero-padded block; the block's ``c`` and ``z`` stay in ``self._C``,
        ``self._Z`` and ``|x|^2`` in ``self._xx``."""
        r = R.shape[0]
        xb = self._xb
        if xb is None:
            xb = self.backend.product_tiles(self.dtype, self.m)[0]
        rows = xb.shape[0]
        xb[:r] = R
        xb[r:] = 0
        xx = np.einsum("ij,ij->i", xb, xb)
        self._xx = xx
        live = xx[:r] > 0
        if n == 0:  # line 8 of Algorithm 2: Wp = 1 while D is empty (0 for a zero sample)
            return live.astype(self.dtype)
        # at least 2 atoms (zero past n): a one-column product would go through gemv, whose
        # rounding depends on the row's position
        nq = max(n, 2)
        C = self._cflat[:rows * nq].reshape(rows, nq)
        self._correlate(xb, nq, C)
        Z = self._zflat[:rows * nq].reshape(rows, nq)
        self._li_rows(C, nq, Z)
        self._C, self._Z = C, Z
        pp = np.einsum("ij,ij->i", Z, Z)
        with np.errstate(divide="ignore", invalid="ignore"):
            wp2 = 1 - pp[:r] / xx[:r]
            refine = live & (wp2 < refine2)
            if refine.any():
                W = self._li_right(Z, nq)
                res = self._residual(W, nq, xb)
                rr = np.einsum("ij,ij->i", res, res)[:r]
                wp2 = np.where(refine, rr / xx[:r], wp2)
        return np.where(live, np.clip(wp2, 0, 1), 0).astype(self.dtype, copy=False)

    # the test's two products with Li (packed: a block of its rows at a time)
    def _li_rows(self, C, nq, Z):
        """``Z = C @ Li[:nq, :nq].T`` (row-independent)."""
        if self.packed is not None:
            return self.packed.li_rows(C, nq, Z)
        return self.backend.rows_matmul(C, self._li(nq).T, out=Z)

    def _li_right(self, Z, nq):
        """A new ``Z @ Li[:nq, :nq]`` (row-independent)."""
        if self.packed is not None:
            return self.packed.li_right(Z, nq)
        return self.backend.rows_matmul(Z, self._li(nq))

    def _li(self, nq):
        """``Li[:nq, :nq]``: the kept factor, or, for a full dictionary that dropped it (a
        packed one), computed here from G (only :meth:`wp` asks then: nothing joins a full
        dictionary)."""
        if self.Li is not None:
            return self.Li[:nq, :nq]
        li = self._li_now  # computed once per wp call, for its blocks
        if li is None or li.shape[0] != nq:
            li = self._li_now = inverse_factor(self.G[:nq, :nq], self.dtype)
        return li

    def _gram(self, nd):
        """OMP's ``G[:nd, :nd]``: a view (the packed one's while the dictionary fills)."""
        return self.G[:nd, :nd] if self.packed is None else self.packed.view(nd)

    def _drop_li(self) -> None:
        """The dictionary is full: a packed ``G`` is unpacked (Li dropped), and the plans
        that read it packed are remade."""
        if self.packed is not None:
            self.packed.unpack()
            self.packed = None
            self._plan = self._plan_key = None

    # the test's two products with the atoms (the stored-atom workspace decodes them)
    def _correlate(self, X, nq, out):
        """``out = X @ D[:nq].T`` (row-independent)."""
        self.backend.rows_matmul(X, self.D[:nq].T, out=out)

    def _residual(self, W, nq, X):
        """A new array ``X - W @ D[:nq]`` (row-independent)."""
        return X - self.backend.rows_matmul(W, self.D[:nq])

    def wp(self, n, X):
        """Wp of each row of ``X`` against the first ``n`` atoms (the explicit residual
        wherever the cheap formula cancels), shape (len(X),)."""
        out = np.empty(X.shape[0], self.dtype)
        b = self._scan
        try:
            for s in range(0, X.shape[0], b):
                out[s:s + b] = np.sqrt(self._test(n, X[s:s + b], REFINE_WP2))
        finally:
            self._li_now = None  # (a dropped Li computed for this call: not kept)
        return out

    def _join(self, n, a, r, wp2):
        """Append row ``a`` (row ``r`` of the last tested block) as atom ``n``; return |a|."""
        xx = self._xx[r]
        norm = np.sqrt(xx)
        d = self.D[n]
        np.divide(a, norm, out=d)
        # L's new row is z / |x| and its diagonal the row's own Wp
        self._put(n, self._C[r, :n] / norm if n else None, np.dot(d, d),
                  self._Z[r, :n] / norm if n else None, np.sqrt(wp2))
        return norm

    def _put(self, n, g, gnn, h, lnn) -> None:
        """Atom ``n`` joins: G's new row and column ``g`` (n,) and diagonal ``gnn``; from L's
        new row ``h`` (n,) and diagonal ``lnn``, Li's new row ``-(h Li[:n, :n]) / lnn`` and
        diagonal ``1 / lnn`` (packed or not).  ``g`` and ``h`` are None for the first atom."""
        pk = self.packed
        if pk is not None:
            pk.put(n, g, gnn, -pk.li_right(h[None, :], n, rows=False)[0] / lnn if n else None,
                   1 / lnn)
            return
        G, Li = self.G, self.Li
        if n:
            G[n, :n] = g
            G[:n, n] = g
            Li[n, :n] = -(h @ Li[:n, :n]) / lnn
        Li[n, n] = 1 / lnn
        G[n, n] = gnn

    # -- Algorithm 2 on a batch ----------------------------------------------------------
    def plan(self, n, k, tol=None, width=None, mean=None, scale=None):
        """The encode plan (:meth:`hal.Backend.prepare_encode`) for the first ``n`` atoms,
        made once per dictionary size and parameters."""
        key = (n, k, tol, width, mean is not None)
        if self._plan_key != key or (mean is not None and self._plan.mean is not mean):
            self._plan = None  # the old plan goes first (peak memory)
            nd = max(n, 2)     # a second, zero atom: see _test (OMP never picks it)
            self._plan = self.backend.prepare_encode(
                self.D[:nd], np.ascontiguousarray(self.G[:nd, :nd]), min(k, n), tol=tol,
                mean=mean, scale=scale, width=width)
            self._plan_key = key
        return self._plan

    def scratch(self) -> list:
        """The arrays of the training encode plan's workspace that are free between calls
        (:meth:`hal.backend.OMPWorkspace.scratch`; none before a plan is made)."""
        lend = getattr(self._plan, "scratch", None)
        return lend() if lend is not None else []

    def exec_plan(self, n, k, tol=None, width=None, mean=None, scale=None):
        """The execution phase's encode plan for the first ``n`` atoms: on the native
        backend's per-row kernels where :func:`hal.execution.execution_backend` says so
        (the backend is ``compiled_execution`` and they build; atoms stored in the compute
        dtype), else :meth:`plan`.  Made once per dictionary size and parameters; the
        atoms' transposed copy it reads is kept and extended as atoms join (one copy of each
        atom, not one of the dictionary per join).  Training never uses it."""
        from ...execution import execution_backend
        xbe = execution_backend(self.backend)
        if xbe is self.backend or n == 0 or not self._exec_ok(xbe):
            return self.plan(n, k, tol, width, mean, scale)
        key = (n, k, tol, width, mean is not None)
        if self._xkey == key and (mean is None or self._xplan.mean is mean):
            return self._xplan
        self._xplan = self._xkey = None  # the old plan goes first (peak memory)
        self._xplan = self._exec_make(xbe, n, k, tol, width, mean, scale)
        self._xkey = key
        return self._xplan

    # the two things a workspace over other atoms replaces (hal.backends.numpy.stored)
    def _exec_ok(self, xbe) -> bool:
        """Whether ``xbe``'s kernels can code these atoms (stored in the compute dtype)."""
        return self.D.dtype == self.G.dtype and hasattr(xbe, "encode_plan_over")

    def _exec_make(self, xbe, n, k, tol, width, mean, scale):
        """``xbe``'s encode plan over the first ``n`` atoms, on its transposed copy of them
        (``_xdt``), extended column by column as atoms join."""
        if self._xdt is None:
            self._xdt = xbe.transposed_atoms(self.lb, self.m, self.dtype)
            self._xfilled = 0
        if n < self._xfilled:  # never by Algorithm 2 (atoms only join): copied again
            self._xfilled = 0
        if n > self._xfilled:
            self._xdt[:self.m, self._xfilled:n] = self.D[self._xfilled:n].T
            self._xfilled = n
        return xbe.encode_plan_over(self._xdt, self.G, n, min(k, n), tol=tol, mean=mean,
                                    scale=scale, width=width)

    def code_plan(self, n, k, tol=None, width=None):
        """The plan that codes the stream's rows that do not join (standardized rows,
        ``encode(..., raw=False)``): the execution phase's per-row kernels where
        :func:`hal.execution.execution_backend` puts them (their codes depend on nothing
        but the row and the dictionary: any batch split, any number of ranks, a resumed fit
        give the same bits), else the backend's own :meth:`plan`.  The execution plan made
        for ``transform`` serves here too whatever its statistics (its standardization is
        skipped for standardized rows), so alternating the phases does not remake it."""
        if self._xkey is not None and self._xkey[:4] == (n, k, tol, width):
            return self._xplan
        return self.exec_plan(n, k, tol, width)

    def run(self, n, lmax, rows, idx, val, thr, k, tol=None, refine2=REFINE_WP2):
        """Algorithm 2 on the standardized ``rows`` (N, m) from ``n`` atoms (at most
        ``lmax``): codes into ``idx`` / ``val`` (N, width; every entry written), a joining
        row coded by ``|x|`` on its new atom.  ``thr``: the Wp threshold; ``refine2``: the
        explicit residual below this Wp^2.  Returns the atoms after the batch."""
        N = rows.shape[0]
        width = idx.shape[1]
        pos = 0
        while pos < N:
            if n >= lmax:  # full: nothing can join, plain OMP for the rest
                self.code_plan(n, k, tol, width).encode(rows[pos:], idx[pos:], val[pos:],
                                                        raw=False)
                break
            start, join = pos, -1
            while pos < N:  # a block at a time, for the first row that must join
                e = min(N, pos + self._scan)
                wp2 = self._test(n, rows[pos:e], refine2)
                hit = np.flatnonzero(np.sqrt(wp2) > thr)
                if hit.size:
                    join = pos + int(hit[0])
                    break
                pos = e
            end = N if join < 0 else join
            if end > start and n:
                self.code_plan(n, k, tol, width).encode(rows[start:end], idx[start:end],
                                                        val[start:end], raw=False)
            elif end > start:  # an empty dictionary codes everything as zero
                idx[start:end] = -1
                val[start:end] = 0
            if join < 0:
                break
            r = join - pos
            idx[join] = -1
            val[join] = 0
            idx[join, 0] = n
            val[join, 0] = self._join(n, rows[join], r, wp2[r])
            n += 1
            pos = join + 1
            if n >= lmax:
                self._drop_li()
        return n


    def runner(self, lmax, k, tol, thr, refine2, width, rows, mean=None, scale=None):
        """:meth:`run` on raw rows with its parameters bound (``rows``: unused here):
        ``call(X, idx, val, n)`` checks that ``X`` is finite, standardizes it (``mean``,
        ``scale``: ``(x - mean) / scale``) and streams it from ``n`` atoms; returns the atoms
        after it, or ``-1`` (nothing done) for a non-finite ``X``.  The one-call path of a
        stream fed a row at a time (the native backend binds it to one kernel call)."""
        # codes nobody reads (partial_fit): scratch for up to ``rows`` rows, made once
        cap = int(rows or 0)
        sidx, sval = np.empty((cap, width), np.int32), np.empty((cap, width), self.dtype)
        # (atoms, the steady state's plan, its encode_rows, its rows_into on the scratch:
        # made on the first one-row call - None until then, False where the plan has none)
        held = [None, None, None, None]

        def steady(n):
            """The steady state's plan, looked up again only when the workspace made
            another (``held``)."""
            if held[0] != n or held[1] is not self._xplan:
                plan = self.exec_plan(n, k, tol, width, mean, scale)
                held[:] = (n, plan, getattr(plan, "encode_rows", None), None)

        def call(X, idx, val, n):
            """``idx`` None: the codes go to scratch (not returned)."""
            r = X.shape[0]
            if idx is None:
                if r <= cap:
                    idx, val = sidx[:r], sval[:r]
                else:
                    idx, val = np.empty((r, width), np.int32), np.empty((r, width), self.dtype)
            if n >= lmax and self._xkey is not None:
                # the steady state on the execution kernels (code_plan's, here with the
                # statistics bound): finiteness, standardization (NumPy's rounding) and the
                # codes in one kernel call, the same bits as the path below
                steady(n)
                if held[2] is not None:
                    return n if held[2](X, idx, val, True) else -1
            if not np.isfinite(X).all():
                return -1
            if mean is not None:
                X = X - mean
                X /= scale
            return self.run(n, lmax, X, idx, val, thr, k, tol=tol, refine2=refine2)

        def lean(X, n):
            """``call(X, None, None, n)``: in the steady state one kernel call into the
            scratch (pointers made once), the same bits."""
            if X.shape[0] <= cap:
                if held[0] != n or held[1] is not self._xplan:  # (held[0] == n: n >= lmax)
                    if n < lmax or self._xkey is None:
                        return call(X, None, None, n)
                    steady(n)
                one = held[3]
                if one is None:  # bound here, not in steady: a batch has no use for it
                    into = getattr(held[1], "rows_into", None)
                    one = held[3] = False if into is None or not cap else into(sidx, sval)
                if one:
                    return n if one(X) else -1
            return call(X, None, None, n)

        def steady_row():
            """``row(X) -> bool`` for one raw conforming row (1, m) once the dictionary holds
            ``lmax`` atoms: ``lean(X, lmax) >= 0`` in one kernel call (the steady state's
            plan bound now, with its row count; False: a NaN or Inf, nothing done);
            ``row.codes``: the (1, width) scratch its codes go to; ``row.kernel`` /
            ``row.rfb``: its kernel call, ``fn(struct, rfb(ctype, X, False))`` -> < 0 for
            a NaN or Inf, else the samples OMP stopped early, for a caller to make itself.
            None where the plan has no such call (the caller keeps :func:`lean`)."""
            if not cap or self._xkey is None:
                return None
            make = getattr(self.exec_plan(lmax, k, tol, width, mean, scale), "row_into",
                           None)
            if make is None:
                return None
            row = make(sidx[:1], sval[:1])
            row.codes = (sidx[:1], sval[:1])
            return row
        call.lean = lean
        call.steady_row = steady_row
        call.rows = None  # any number of rows per call (NumPy's OMP is vectorized over them)
        return call


class BasisSpec:
    """Mixin of :class:`~hal.backends.numpy.NumpyBackend`: :meth:`prepare_basis`."""

    def prepare_basis(self, D, G, Li) -> BasisWorkspace:
        """Bind the streaming transform's state arrays (D (lb, m), G and Li (lb, lb),
        C-contiguous, one float dtype, kept for the workspace's life).

        Returns
        -------
        BasisWorkspace
            ``run`` (Algorithm 2 on a batch), ``wp`` (the projection error) and ``plan``
            (the execution phase's encode plan).
        """
        return BasisWorkspace(self, D, G, Li)
