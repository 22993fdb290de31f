"""The NumPy specification of OMP: Batch-OMP, and the textbook OMP beside it.

Batch-OMP (Rubinstein, Zibulevsky and Elad, 2008) vectorized across samples: all samples of a
chunk advance one OMP iteration at a time.  The per-sample state is a QR factorization of the
chosen atoms kept in coefficient space, so nothing of size m is touched after the first
correlation:

* ``c = X @ D.T`` (n, l): each residual's correlation with every atom (one GEMM on fixed
  ``block``-row blocks; on the paper's sizes it is ~96% of the FLOPs);
* ``Y[s]`` (n, l): ``b_s * D q_s``, the correlations of every atom with the s-th orthonormal
  direction ``q_s`` of the chosen atoms' span, pre-scaled by that step's coefficient
  ``b_s = c_j / d_s^2`` so that the residual update is a plain ``c -= Y[s]``;
* the triangular factor ``R`` of ``D_I.T = Q R`` (``R.T R`` is the Cholesky factor of the
  chosen atoms' Gram matrix grown one row per iteration: Batch-OMP's progressive Cholesky)
  is kept implicitly in the gathered ``u_s = Y[s][j_t]`` and the scales.

Iteration t picks ``j = argmax |c|``, gathers ``u_s = Y[s][j]`` (s < t), gets
``d^2 = G[j, j] - sum_s rho_s u_s^2`` (``rho_s = 1 / z_s^2``, ``z_s`` the residual's
coordinate on ``q_s``), ``b = c_j / d^2`` and the new scaled direction
``Y[t] = b (G[j] - sum_s rho_s u_s Y[s])`` - one small matrix-vector product per sample
(a batched ``np.matmul``) whose coefficient vector already holds ``b`` - then
``c -= Y[t]``.  Each step costs O(t l) per sample, as Batch-OMP's ``G_I gamma`` update.  The
coefficients come from one batched back substitution at the end, and the squared residual is
``|x|^2 - sum_t z_t^2``.

Performance notes (measured, see ``benchmarks/transform.py``): per-call overhead of NumPy is
~0.5-5 us, so samples advance in chunks; a chunk's ``Y`` is sized to stay in a core's L2
cache (:attr:`NumpyBackend.cache_bytes`), because reading ``Y`` from L3 on every iteration
cost more than the extra Python overhead of smaller chunks.  Every array the inner loop
touches is laid out so that each NumPy call runs one long contiguous inner loop (broadcasting
a per-row scalar over (n, l) costs ~4x a contiguous pass).

Size: ~325 lines, because Batch-OMP's one loop is best read whole beside its notes, and the
textbook OMP it is tested against sits here too.
"""
from __future__ import annotations

import os
import sys
import warnings

import numpy as np

from ...backend import OMPWorkspace, SparseCodes

__all__ = ["BatchOMP", "LinearDependenceWarning", "omp_textbook", "warn_stopped_early",
           "kernel_coded"]


def _take_rows(G, j, out):
    """``out[:] = G[j]``: ``np.take`` on a C-contiguous ``G``; on a strided view (a stored
    dictionary's plan reads G's leading block in place while the dictionary fills) the
    rows are gathered by indexing, since ``np.take`` would first copy the whole view; a
    packed Gram matrix (:class:`hal.backends.numpy.packed.GramView`) gathers its own."""
    if not isinstance(G, np.ndarray):
        G.take_rows(j, out)
    elif G.flags.c_contiguous:
        np.take(G, j, axis=0, out=out, mode="clip")
    else:
        out[...] = G[np.clip(j, 0, G.shape[0] - 1)]  # take's mode="clip"


class LinearDependenceWarning(RuntimeWarning):
    """OMP stopped early for some samples because the next atom lies in the span of the
    atoms already chosen (a rank-deficient dictionary)."""


def omp_textbook(a, Dp, k):
    """Algorithm 1 of Rouhani et al. (ISCAS 2017), transcribed literally: the reference
    Batch-OMP is tested against (one sample, a least-squares problem per iteration solved
    with the explicit ``(D^T D)^-1`` the paper writes; never used on a hot path).

    Parameters
    ----------
    a : ndarray of shape (m,)
        One sample (the paper's column).
    Dp : ndarray of shape (m, l)
        The dictionary in the paper's notation: atoms as columns.
    k : int
        Iterations (non-zeros).

    Returns
    -------
    code : ndarray of shape (l,)
        The sum of the per-iteration solutions (the same as least squares of ``a`` on the
        final support, because r_{i-1} is already orthogonal to the earlier atoms).
    support : list of int
        The chosen atoms in order.
    """
    r = a.copy()
    support = []
    code = np.zeros(Dp.shape[1])
    for _ in range(k):
        j = int(np.argmax(np.abs(Dp.T @ r)))       # step 4 (over every column)
        support.append(j)
        DL = Dp[:, support]
        c = np.linalg.inv(DL.T @ DL) @ DL.T @ r     # step 5
        r = r - DL @ c                              # step 6
        code[support] += c
    return code, support


#: the packages whose frames a warning skips to reach the caller's line (hal/ and tinydl/)
_OWN_DIRS = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))), d) + os.sep for d in ("hal", "tinydl"))


def caller_stacklevel() -> int:
    """``stacklevel`` for a ``warnings.warn`` made in the caller of this function that points
    at the first frame outside ``hal`` and ``tinydl``: the user's line, however many library
    frames (backend, plan, runner, estimator) the call went through on its way down."""
    f, level = sys._getframe(2), 2
    while f is not None and f.f_code.co_filename.startswith(_OWN_DIRS):
        f, level = f.f_back, level + 1
    return level


def warn_stopped_early(stopped, n, l, k, m) -> None:
    """The one warning of an OMP call whose ``stopped`` samples (of ``n``) stopped at the
    rank of their chosen atoms with fewer than ``k`` non-zeros (every backend issues it).
    It points at the caller's line outside the library (:func:`caller_stacklevel`), however
    deep the backend's path."""
    if stopped:
        k = min(int(k), int(l))
        why = (f"k={k} exceeds the {m} dimensions, so no sample can take more than {m} "
               f"independent atoms" if k > m else
               f"the next atom was linearly dependent on the atoms already chosen (a "
               f"rank-deficient dictionary, l={l})")
        warnings.warn(
            f"OMP stopped early for {stopped} of {n} samples, with fewer than k={k} "
            f"non-zeros, at the rank of their chosen atoms: {why}", LinearDependenceWarning,
            stacklevel=caller_stacklevel())


def kernel_coded(dep, n, l, k, m) -> bool:
    """What a coding kernel's non-zero return ``dep`` means for its caller (the one-row
    calls test ``dep`` first, so this runs only then): False for a NaN or Inf (negative:
    nothing was written), else True after :func:`warn_stopped_early` for the ``dep`` of the
    ``n`` samples OMP stopped early."""
    if dep < 0:
        return False
    warn_stopped_early(dep, n, l, k, m)
    return True


#: the workspace arrays :meth:`BatchOMP._omp_chunk` writes before it reads them on every
#: call (the correlations and their magnitudes, the directions Y, and U, whose entries the
#: back substitution reads only where this chunk wrote them): dead between calls
#: (:meth:`hal.backend.OMPWorkspace.scratch`)
OMP_SCRATCH = ("Y", "corr", "abs", "u")


def check_tol(tol) -> None:
    """Raise unless ``tol`` is None or a finite number >= 0 (OMP's relative residual; the
    kernels square it, so a negative one would act as its absolute value and NaN as 0 or as
    no limit, by backend)."""
    if tol is not None and not (isinstance(tol, (int, float, np.integer, np.floating))
                                and np.isfinite(tol) and tol >= 0):
        raise ValueError(f"omp_encode: tol must be None or a finite number >= 0 (a relative "
                         f"residual), got {tol!r}")


class BatchOMP:
    """Mixin of :class:`~hal.backends.numpy.NumpyBackend`: Batch-OMP over its products
    (``self._rows_matmul``, ``self.block``, ``self.batch``, ``self.cache_bytes``)."""

    #: code a lone sample as a pair (NumPy's reductions round a single row differently);
    #: a backend that codes each sample on its own, in a fixed order, turns it off
    _lone_as_pair = True
    #: whether a float32 workspace keeps a contiguous copy of ``D.T`` (``m x l`` values);
    #: :func:`tinydl.lowmem.plan_backend` turns it off for a small-memory plan (the copy is
    #: then never allocated: allocating and dropping it was a dictionary-sized transient)
    omp_dt_copy = True

    def _chunk_rows(self, batch: int, l: int, k: int, itemsize: int) -> int:
        """Samples per chunk: at most ``batch``, and a multiple of ``block`` whose ``Y``
        ((k + 1) * l values per sample) fits :attr:`cache_bytes` (never below ``block``)."""
        per_sample = (k + 1) * l * itemsize
        fit = max(1, int(self.cache_bytes // per_sample) // self.block) * self.block
        return max(1, min(batch, fit))

    def prepare_omp(self, batch, m, l, k, dtype, dt_copy=None) -> OMPWorkspace:
        """Allocate every buffer :meth:`omp_encode` needs for chunks of up to ``batch``
        samples (fewer if their state would not fit :attr:`cache_bytes`); ``dt_copy``: keep
        the float32 copy of ``D.T`` (None: :attr:`omp_dt_copy`)."""
        dtype = np.dtype(dtype)
        batch = int(min(batch, self.batch)) if batch else self.batch
        k = int(min(k, l))
        kk = max(k, 1)
        # at least 2 rows: a lone sample is coded as a pair (see omp_encode)
        batch = max(2, self._chunk_rows(max(batch, 1), l, kk, dtype.itemsize))
        blk = self.block
        a = {
            "corr": np.empty((batch, l), dtype),
            "abs": np.empty((batch, l), dtype),
            # slot 0: the rows G[j] of this iteration; slot s + 1: the scaled direction Y[s]
            "Y": np.empty((kk + 1, batch, l), dtype),
            "coef": np.zeros((kk + 1, batch), dtype),   # this iteration's combination of Y
            "u": np.zeros((kk, kk, batch), dtype),      # u[t, s] = Y[s][j_t]
            "ru": np.zeros((kk, batch), dtype),
            "b": np.zeros((kk, batch), dtype),          # b_t = c_j / d_t^2 (0: not taken)
            "cj": np.zeros((kk, batch), dtype),
            "nrho": np.zeros((kk, batch), dtype),       # -1 / z_t^2
            "gamma": np.zeros((kk, batch), dtype),
            "j": np.zeros((kk, batch), np.intp),
            "fj": np.zeros(batch, np.intp),
            "rowoff": np.arange(batch, dtype=np.intp) * l,  # row starts in the flat (n, l)
            "vec": np.zeros((4, batch), dtype),         # d^2, G_jj, tiny * G_jj, scratch
            "ok": np.zeros(batch, bool),
            "act": np.zeros(batch, bool),
            "xx": np.zeros(batch, dtype),               # |x|^2 per sample
            "pad_out": np.empty((l, self.product_rows), dtype),
        }
        if dtype == np.float32 and (self.omp_dt_copy if dt_copy is None else dt_copy):
            # X @ D.T on a contiguous copy of D.T: measured ~1.3x faster for float32 GEMMs on
            # OpenBLAS (no gain in float64); refreshed on every call, so D may change
            a["DT"] = np.empty((m, l), dtype)
        return OMPWorkspace(batch=batch, m=m, l=l, k=k, dtype=dtype, block=blk, arrays=a,
                            scratch_names=OMP_SCRATCH)

    def omp_encode(self, X, D, G, k, tol=None, ws=None) -> SparseCodes:
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
        SparseCodes
            ``indices`` (n, k) int32 in selection order (``-1`` pads), ``values`` (n, k),
            ``n_nonzero`` (n,) int32 and ``residual_sq`` (n,) filled.
        """
        check_tol(tol)
        codes, stopped = self._omp_encode(X, D, G, k, tol, ws)
        warn_stopped_early(stopped, X.shape[0], D.shape[0], k, X.shape[1])
        return codes

    def _omp_encode(self, X, D, G, k, tol=None, ws=None):
        """:meth:`omp_encode` without the warning: returns ``(codes, stopped)``, ``stopped``
        the number of samples that stopped early at the rank of their chosen atoms."""
        n, m = X.shape
        l = D.shape[0]
        k = int(min(k, l))
        dtype = X.dtype
        if ws is None or not ws.fits(min(n, ws.batch) if ws else n, m, l, k, dtype) \
                or ws.block != self.block:
            ws = self.prepare_omp(min(n, self.batch), m, l, k, dtype)
        DT = ws.arrays.get("DT")
        if DT is not None:
            if not (ws.fixed_D and ws.dt_filled):
                np.copyto(DT, D.T)
                ws.dt_filled = True
        else:
            DT = D.T
        indices = np.full((n, k), -1, np.int32)
        values = np.zeros((n, k), dtype)
        nnz = np.zeros(n, np.int32)
        resid = np.empty(n, dtype)
        dependent = 0
        for s in range(0, n, ws.batch):
            e = min(n, s + ws.batch)
            if e - s == 1 and self._lone_as_pair:
                # NumPy reduces a (t, 1) array along its now-contiguous axis with pairwise
                # summation, (t, n >= 2) ones row by row: code a lone sample as a pair so that
                # its result is bit-identical to the same sample in any larger batch
                pi, pv = np.full((2, k), -1, np.int32), np.zeros((2, k), dtype)
                pn, pr = np.zeros(2, np.int32), np.empty(2, dtype)
                dep = self._omp_chunk(np.concatenate([X[s:e], X[s:e]]), DT, G, k, tol, ws,
                                      pi, pv, pn, pr)
                indices[s], values[s], nnz[s], resid[s] = pi[0], pv[0], pn[0], pr[0]
                dependent += dep // 2
                continue
            dependent += self._omp_chunk(X[s:e], DT, G, k, tol, ws, indices[s:e],
                                         values[s:e], nnz[s:e], resid[s:e])
        if k > m:
            # more non-zeros than dimensions: every sample stops at the rank of its atoms
            # (at most m); count those that took fewer than k, except where x is zero or
            # the tolerance was met
            stopped = (nnz < k) & np.any(X != 0, axis=1)
            if tol is not None:
                stopped &= resid > np.einsum("ij,ij->i", X, X) * X.dtype.type(float(tol) ** 2)
            dependent = int(np.count_nonzero(stopped))
        return SparseCodes(indices, values, l, nnz, resid), dependent

    def _chunk_correlations(self, X, DT, A, corr=None):
        """A chunk's correlations ``c = X @ D.T`` (fixed-size row blocks; or ``corr`` given)
        and squared norms ``|x|^2``, written into the workspace arrays ``A["corr"]`` and
        ``A["xx"]``; returns those ``(n, l)`` and ``(n,)`` views."""
        n = X.shape[0]
        c, xx = A["corr"][:n], A["xx"][:n]
        if corr is None:
            # the padded input tile is the backend's shared one (product_tiles)
            pad_in = self.product_tiles(X.dtype, X.shape[1])[0]
            self._rows_matmul(X, DT, c, pad_in, A["pad_out"], sq=xx)
        else:
            np.copyto(c, corr)
            np.einsum("ij,ij->i", X, X, out=xx)
        return c, xx

    def _omp_chunk(self, X, DT, G, k, tol, ws, idx, val, nnz, resid_out, corr=None) -> int:
        """Code the n <= ws.batch rows of ``X``; returns how many hit a dependent atom."""
        n = X.shape[0]
        A = ws.arrays
        dt = X.dtype
        eps = np.finfo(dt).eps
        c = A["corr"][:n]
        cf = c.reshape(-1)
        absc = A["abs"][:n]
        Yall = A["Y"]
        Y = Yall[:, :n]
        Yflat = Yall.reshape(Yall.shape[0], -1)  # Y[s][i, j] is Yflat[s, i * l + j]
        YT = Y.transpose(1, 0, 2)                # per sample: (k + 1, l), rows Y[s]
        coef = A["coef"][:, :n]
        coefT = coef.T[:, None, :]               # per sample: (1, k + 1)
        U, RU = A["u"][:, :, :n], A["ru"][:, :n]
        B, CJ, NRHO, J = A["b"][:, :n], A["cj"][:, :n], A["nrho"][:, :n], A["j"][:, :n]
        gdiag = np.ascontiguousarray(G.diagonal())  # (a method: G may be a GramView)
        # d^2 = G_jj - |w|^2 is exact to ~k eps G_jj: below a few times that, the atom lies
        # in the span of the chosen ones (an atom picked twice lands here too)
        tiny = dt.type(16 * max(k, 1) * eps)
        ctol = tiny * tiny
        rowoff = A["rowoff"][:n]
        fj = A["fj"][:n]
        d2, gj, tg, tmp = A["vec"][:, :n]
        ok = A["ok"][:n]

        xx = self._chunk_correlations(X, DT, A, corr)[1]
        # |x|^2 - sum z^2 is exact to ~k eps |x|^2 times the conditioning of the chosen atoms:
        # a sample stopped at the rank of its atoms is counted (warned about) only if what is
        # left is clearly above that, |r|^2 > sqrt(eps) |x|^2 (a rank-deficient dictionary
        # leaves O(|x|^2); a represented sample rounding noise)
        noise = xx * np.sqrt(eps)
        active = A["act"][:n]
        np.greater(xx, 0, out=active)  # an all-zero sample takes no atom
        if tol is not None:
            resid = xx.copy()
            limit = xx * dt.type(float(tol) ** 2)
            active &= resid > limit
        # U needs no clearing: iteration t writes U[t, :t] for every sample, and the back
        # substitution reads only entries written in this chunk
        B[:] = 0
        CJ[:] = 0
        NRHO[:] = 0
        dependent = 0
        T = 0
        # every take below uses mode="clip": the indices are in range by construction, and
        # the default mode="raise" copies through a buffer when out= is given (~3x slower)
        for t in range(k):
            if not active.any():
                break
            T = t + 1
            np.abs(c, out=absc)
            j = J[t]
            np.argmax(absc, axis=1, out=j)
            np.add(rowoff, j, out=fj)
            cj = CJ[t]
            np.take(cf, fj, out=cj, mode="clip")
            np.take(gdiag, j, out=gj, mode="clip")
            if t:
                u = U[t, :t]
                np.take(Yflat[1:t + 1], fj, axis=1, out=u, mode="clip")
                ru = RU[:t]
                np.multiply(NRHO[:t], u, out=ru)                     # -rho_s u_s
                np.einsum("ij,ij->j", ru, u, out=d2)
                d2 += gj                                             # d^2 = G_jj - |w|^2
            else:
                np.copyto(d2, gj)
            np.multiply(gj, tiny, out=tg)
            np.greater(d2, tg, out=ok)
            # the best correlation at rounding level (|c_j| <= 16 k eps |x| |d_j|): the
            # residual is orthogonal to every atom - x is represented (stop silently) or what
            # is left lies outside the atoms' span (rank-deficient: counted below) - and any
            # further atom would be fitted to rounding noise (coefficients off by orders)
            np.multiply(cj, cj, out=tmp)
            rep = tmp <= xx * gj * ctol
            ok &= ~rep
            ok &= active
            bt = B[t]
            np.divide(cj, d2, out=bt, where=ok)
            # a zero correlation (residual orthogonal to every atom) also stops a sample
            np.not_equal(bt, 0, out=ok)
            if not ok.all():
                # warn only where a residual is left: once x is represented (residual at
                # rounding level) every correlation is noise and stopping is the right answer
                left = resid if tol is not None else \
                    xx - np.einsum("ij,ij->j", B[:t], CJ[:t])
                dependent += int(np.count_nonzero(active & ((d2 <= tg) | rep) & (left > noise)))
            Yt = Y[t + 1]
            if t:
                np.copyto(coef[0], bt)
                np.multiply(RU[:t], bt, out=coef[1:t + 1])
                _take_rows(G, j, Y[0])
                # Y[t] = b (G[j] - sum_s rho_s u_s Y[s]), one matrix-vector product per sample
                np.matmul(coefT[:, :, :t + 1], YT[:, :t + 1], out=Yt[:, None, :])
            else:
                _take_rows(G, j, Yt)
                Yt *= bt[:, None]
            c -= Yt
            # the chosen atom's correlation is 0 up to rounding: make it exact, so that it is
            # picked again only when every correlation is rounding noise (d^2 ~ 0 stops it)
            np.put(cf, fj, 0, mode="clip")
            np.multiply(cj, cj, out=tmp)
            np.divide(d2, tmp, out=NRHO[t], where=ok)
            np.negative(NRHO[t], out=NRHO[t])
            if tol is not None:
                resid -= bt * cj  # |z_t|^2 = c_j^2 / d^2
                ok &= resid > limit
            np.copyto(active, ok)
        # coefficients by back substitution on R gamma = z, all samples at once:
        # gamma_t = b_t - (1 / c_j(t)) sum_{s > t} u[s, t] gamma_s
        taken = B[:T] != 0
        gam = A["gamma"][:T, :n]
        gam[:] = 0
        acc = np.empty(n, dt)
        for t in range(T - 1, -1, -1):
            if t < T - 1:
                np.einsum("ij,ij->j", U[t + 1:T, t], gam[t + 1:T], out=acc)
                np.divide(acc, CJ[t], out=acc, where=taken[t])
                np.subtract(B[t], acc, out=gam[t], where=taken[t])
            else:
                gam[t] = B[t]
        val[:, :T] = gam.T
        idx[:, :T] = np.where(taken.T, J[:T].T, -1)
        nnz[:] = taken.sum(axis=0)
        np.maximum(xx - np.einsum("ij,ij->j", B[:T], CJ[:T]), 0, out=resid_out)
        return dependent

