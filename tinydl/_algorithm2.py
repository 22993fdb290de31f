"""Algorithm 2 of the TinyDL paper on a validated, standardized batch: the scan for rows that
must join the dictionary, the joins, and Batch-OMP for the rows between them.

A mixin of :class:`tinydl.transform.StreamingDictionary` (which owns the state: ``_D``,
``_Q``, ``_L``, ``_G``, the scan buffers and the backend ``_be`` with its basis workspace
``_bws``, allocated here by :meth:`Algorithm2Scan._alloc_basis` and ``_alloc_scratch``).

How a batch stays identical to one sample at a time (bit for bit, with one BLAS thread):

* ``Wp`` comes from an orthonormal basis ``Q`` of span(D) (one Gram-Schmidt step, done
  twice, per new atom): ``Wp^2 = 1 - ||Q a||^2 / ||a||^2``, or the explicit residual
  ``||a - Q^T Q a||^2 / ||a||^2`` where that difference cancels (``Wp < 0.1``).  It is computed
  ``min(block, 16)`` rows at a time in a fixed-size zero-padded buffer, so each row's value
  depends only on that row and the basis at its time;
* the batch is scanned one block at a time; the rows before the first one that must join D are
  coded together by Batch-OMP (whose products also run on fixed-size blocks), the joining row is
  added, and the scan restarts right after it (the rest of that block is recomputed against the
  new basis rather than updated incrementally);
* once D holds ``l`` atoms nothing can join and no Wp is computed: the rest of the stream is
  plain Batch-OMP.

A join and the test of the row right after it go through the backend's basis operations
(:meth:`hal.Backend.prepare_basis`: ``append`` and ``wp_row``; NumPy's specification is
``hal.backends.numpy.basis``).  On ``native`` they are one kernel call: the atom's
Gram-Schmidt pass over Q also computes that row's projections (one pass per join instead of
two), and that row's Wp test computes each projection as a dot product in a fixed order of
its own, so a separate call (the row opening the next batch) gives the same bits.
"""
from __future__ import annotations

import math
from typing import Any, Dict

import numpy as np

import hal

__all__ = ["Algorithm2Scan"]

#: most rows per projection-error product: the scan restarts after every new atom, so a long
#: block wastes work while D fills (measured at m=5625, l=100: 16 rows cost 0.6x of 64)
_SCAN_ROWS = 16
#: rows right after a join are scanned this many at a time (a matrix-vector product): while D
#: fills, sample after sample often joins, and a 16-row product then costs ~8x one row's for
#: the one row it decides (measured at m=5625).  A row's scan size depends only on its
#: distance from the last join, never on the batch split, so results stay bit-identical.
_SMALL_SCAN = 1
#: below this Wp^2 the cheap formula 1 - |Qa|^2/|a|^2 loses digits: use the explicit residual
_REFINE_WP2 = 1e-2
#: scratch buffers and the bound backend (``_alloc_scratch``): rebuilt on unpickling, never
#: pickled (a copy that joblib memory-maps read-only must not be written to)
_SCRATCH = ("_xblk", "_xsmall", "_rblk", "_pflat", "_aa", "_pp", "_avec", "_uvec", "_ws",
            "_ws_n", "_Gn", "_be", "_bws", "_next_wp", "_pcache", "_into", "_into_p")


def _wp_floor(dtype) -> float:
    """Smallest Wp that can make a new atom: below it the sample is in span(D) up to rounding
    and its Gram-Schmidt direction would be noise (D would become rank-deficient)."""
    return float(np.sqrt(np.finfo(dtype).eps))


class Algorithm2Scan:
    """The per-batch engine of :class:`~tinydl.transform.StreamingDictionary` (a mixin: it
    reads and updates the transform's state arrays)."""

    def _alloc_basis(self, l: int, m: int, dtype) -> None:
        """The dictionary's state arrays for ``l`` atoms of ``m`` features, all zero."""
        # At least 2 rows, zero past n_atoms_: products always see >= 2 atoms, because a
        # single-column product goes through BLAS gemv, whose rounding depends on the row's
        # position in the block (which would break batch-split identity while D has 1 atom).
        lb = max(l, 2)
        self._D = np.zeros((lb, m), dtype)   # atoms as rows, unit norm
        self._Q = np.zeros((lb, m), dtype)   # orthonormal basis of span(D), same order
        self._G = np.zeros((lb, lb), dtype)  # D D^T for Batch-OMP
        # D = L Q: row i of L holds atom i's coordinates on the basis (lower triangular);
        # a new atom's Gram row is L[:n, :n] @ L[n, :n], O(l^2) instead of a pass over D
        self._L = np.zeros((lb, lb), dtype)

    def _alloc_scratch(self) -> None:
        l, m, blk, dt = self._D.shape[0], self.n_features_in_, self._fit_params["block"], \
            self.dtype_
        # fixed-size buffers for the projection-error test, allocated once
        scan = min(blk, _SCAN_ROWS)
        self._xblk = np.zeros((scan, m), dt)
        self._xsmall = np.zeros((_SMALL_SCAN, m), dt)
        self._rblk = np.empty((scan, m), dt)
        self._pflat = np.empty(scan * l, dt)
        self._aa = np.empty(scan, dt)
        self._pp = np.empty(scan, dt)
        self._avec = np.empty(m, dt)
        self._uvec = np.empty(m, dt)
        self._ws = None
        self._ws_n = -1
        self._Gn = None
        self._be = hal.get_backend(self.backend, block=blk)
        # the basis operations (the Wp test of one row, the atom append), bound to the state
        # arrays: NumPy's specification (hal.backends.numpy.basis) or a backend's kernels
        self._bws = self._be.prepare_basis(self._D, self._Q, self._L, self._G)
        # (|x|^2, |Q x|^2) of the row after the last join, from the join's kernel call
        self._next_wp = None

    def _run(self, rows: np.ndarray, p: Dict[str, Any]):
        n = rows.shape[0]
        rows = np.ascontiguousarray(rows)
        self._next_wp = None
        l, blk = p["l"], self._xblk.shape[0]
        thr = max(p["alpha"], _wp_floor(self.dtype_))
        kc = min(p["k"], l)
        idx = np.full((n, kc), -1, np.int32)
        val = np.zeros((n, kc), self.dtype_)
        pos = 0
        while pos < n:
            if self.n_atoms_ >= l:  # full: nothing can join, plain OMP for the rest
                self._omp_into(rows[pos:], idx[pos:], val[pos:], p)
                break
            start, join = pos, -1
            while pos < n:  # scan a block at a time for the first row that must join
                small = self._since_join < _SMALL_SCAN
                if small:  # just after a join: another join is likely, scan few rows
                    e = min(n, pos + _SMALL_SCAN - self._since_join)
                    if e == pos + 1 and self.n_atoms_:
                        if self._wp_one(rows[pos]) > thr:  # one row: no arrays
                            join, proj = pos, self._bws.p[:self.n_atoms_]
                            break
                        self._since_join = min(self._since_join + 1, _SMALL_SCAN)
                        pos = e
                        continue
                    wp = self._wp_block(rows[pos:e], self._xsmall)
                else:
                    e = min(n, pos + blk)
                    wp = self._wp_block(rows[pos:e])
                hit = np.flatnonzero(wp > thr)
                if hit.size:
                    join = pos + int(hit[0])
                    proj = self._proj_row(int(hit[0]))
                    break
                self._since_join = min(self._since_join + (e - pos), _SMALL_SCAN)
                pos = e
            end = n if join < 0 else join
            if end > start:
                self._omp_into(rows[start:end], idx[start:end], val[start:end], p)
            if join < 0:
                break
            idx[join, 0] = self.n_atoms_
            val[join, 0] = self._add_atom(rows[join], proj,
                                          rows[join + 1] if join + 1 < n else None)
            self._since_join = 0
            pos = join + 1
        return idx, val

    def _wp_block(self, R: np.ndarray, xb=None) -> np.ndarray:
        """Wp of the rows of ``R`` against the current basis, shape (r,), computed in the
        fixed-size zero-padded buffer ``xb`` (default: the scan block)."""
        r = R.shape[0]
        n = self.n_atoms_
        xb = self._xblk if xb is None else xb
        rows = xb.shape[0]
        aa, pp = self._aa[:rows], self._pp[:rows]
        xb[:r] = R
        xb[r:] = 0
        np.einsum("ij,ij->i", xb, xb, out=aa)
        live = aa[:r] > 0
        if n == 0:  # line 8 of Algorithm 2: Wp = 1 while D is empty (0 for a zero sample)
            self._P = None
            return live.astype(self.dtype_)
        nq = max(n, 2)  # the zero rows of Q past n add nothing (see _init_state)
        P = self._pflat[:rows * nq].reshape(rows, nq)
        self._be.rows_matmul(xb, self._Q[:nq].T, out=P)
        self._P = P  # a joining row's projections Q a start its Gram-Schmidt step
        np.einsum("ij,ij->i", P, P, out=pp)
        with np.errstate(divide="ignore", invalid="ignore"):
            wp2 = 1 - pp[:r] / aa[:r]
            refine = live & (wp2 < _REFINE_WP2)
            if refine.any():
                rr = self._residual_sq(P, xb, nq)[:r]
                wp2 = np.where(refine, rr / aa[:r], wp2)
        wp2 = np.where(live, np.clip(wp2, 0, 1), 0)
        return np.sqrt(wp2)

    def _wp_one(self, a: np.ndarray) -> float:
        """Wp of the one row ``a`` right after a join with the basis kernels (D not empty):
        from the join's own call when it saw this row, else from one ``wp_row`` call, which
        gives the same bits.  Its projections are left in ``self._bws.p[:n_atoms_]``."""
        n = self.n_atoms_
        if self._next_wp is not None:
            xx, pp = self._next_wp
            self._next_wp = None
        else:
            xx, pp = self._bws.wp_row(n, a)
        xx, pp = float(xx), float(pp)
        if not xx > 0:
            return 0.0
        wp2 = 1 - pp / xx
        if wp2 < _REFINE_WP2:
            xb = self._xsmall
            xb[0] = a
            wp2 = float(self._residual_sq(self._bws.p[:n].reshape(1, n), xb, n)[0]) / xx
        return math.sqrt(min(max(wp2, 0.0), 1.0))

    def _residual_sq(self, P, xb, nq) -> np.ndarray:
        """``|a - Q^T Q a|^2`` for the rows ``a`` of ``xb`` from their projections ``P`` on
        ``Q[:nq]``: the explicit residual, where ``1 - |Q a|^2 / |a|^2`` would cancel."""
        rec = self._be.rows_matmul(P, self._Q[:nq], out=self._rblk[:xb.shape[0]])
        np.subtract(xb, rec, out=rec)
        return np.einsum("ij,ij->i", rec, rec)

    def _add_atom(self, a: np.ndarray, proj, x_next) -> float:
        """Append ``a / ||a||`` to D (and its direction to Q) through the backend's basis
        append (:meth:`hal.Backend.prepare_basis`; NumPy's specification is
        ``hal.backends.numpy.basis``); return ``||a||`` (its code).  ``proj`` is ``Q a`` from
        the row's Wp test; with ``x_next`` (the next row of this batch) it also leaves that
        row's projection-error inputs for :meth:`_wp_one`."""
        n = self.n_atoms_
        norm, _, xx, pp = self._bws.append(n, a, proj, x_next)
        self.n_atoms_ = n + 1
        self._next_wp = None if x_next is None else (xx, pp)
        return norm

    def _proj_row(self, r: int):
        """``Q a`` of row ``r`` of the last :meth:`_wp_block` (None while D is empty)."""
        if self._P is None or self.n_atoms_ == 0:
            return None
        return self._P[r, :self.n_atoms_]

    def _prepare_omp(self, p) -> None:
        """Make what OMP on the current dictionary needs - the Gram matrix of its atoms and the
        backend's encode plan (its workspace, its own copy of the atoms if it keeps one, the
        standardization statistics) - once per dictionary size and parameters (the end of a
        fit, a load, or the first call after atoms joined); one-sample calls then reuse it."""
        n = self.n_atoms_
        nd = max(n, 2)
        kk = min(p["k"], n)
        kc = min(p["k"], p["l"])
        # the old plan goes first: it must not live beside the new one (peak memory)
        self._ws = self._Gn = None
        self._Gn = np.ascontiguousarray(self._G[:nd, :nd])
        # atoms are only ever appended (which changes n): D[:nd] is fixed for this plan
        self._ws = self._be.prepare_encode(self._D[:nd], self._Gn, kk, tol=p["tol"],
                                           mean=self.mean_, scale=self.scale_, width=kc)
        self._ws_n = (n, kk, p["tol"], kc, self.mean_ is not None)

    def _plan(self, p):
        """The encode plan for the dictionary as it stands (made by :meth:`_prepare_omp` when
        the dictionary, ``k`` or ``tol`` changed)."""
        key = (self.n_atoms_, min(p["k"], self.n_atoms_), p["tol"], min(p["k"], p["l"]),
               self.mean_ is not None)
        if self._ws_n != key:
            self._prepare_omp(p)
        return self._ws

    def _omp_into(self, R, idx, val, p) -> None:
        """OMP codes of the standardized rows ``R`` into ``idx`` and ``val`` (kc wide)."""
        if self.n_atoms_ == 0:  # an empty dictionary codes everything as zero
            return
        # with one atom, the plan holds a second, zero atom (see _alloc_basis): OMP never picks
        # it (its correlation is 0, and a zero correlation stops a sample), so codes are those
        # of the single atom
        self._plan(p).encode(R, idx, val, raw=False)
