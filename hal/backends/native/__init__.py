"""The native backend: small C kernels for the loops NumPy cannot vectorize well.

Batch-OMP spends, after the correlation GEMM, k iterations of small per-sample work (an
argmax over l atoms, a triangular solve of size t, an update of l correlations): O(k^2 l)
operations per sample that NumPy runs as dozens of array calls per iteration.  Here they are
one C loop per sample, and the k-sparse first-layer products of the trainer
(``gather_matmul`` and its transpose) are too.  Every matrix product still goes through the
BLAS backend (OpenBLAS through cffi), which this backend extends.

The streaming transform has kernels too (:meth:`NativeBackend.prepare_basis`): Algorithm 2 on
a batch - the Wp tests from the inverse Cholesky factor of the Gram matrix, the joins, the OMP
codes - is one C call (``stream.c``), and every correlation, in a batch or alone, is computed
in a fixed order of its own (``correlate.c``), so results do not depend on the batch split;
their specification is ``hal/backends/numpy/basis.py``.  :meth:`NativeBackend.prepare_encode`
binds a dictionary for the execution phase: a whole encode in one call.

Files.  The kernels are C files beside this one, named after the NumPy specification they
implement (``omp.c``, ``sparse.c``, ``basis.c``, ``correlate.c``, ``stream.c``;
``kernels.h`` the prototypes, ``kernels.c``
the unit that instantiates them for float and double).  :mod:`.build` compiles and caches
them and loads them through cffi; :meth:`NativeBackend.probe` says why the backend cannot run
(no cffi, no compiler, a failed build).

:mod:`.bound` holds the objects that bind arrays to kernels once (a sparse layer's plan, the
transform's basis workspace).

Semantics.  The OMP kernel implements the contract of
:meth:`hal.backends.numpy.NumpyBackend.omp_encode` (the specification): the same stopping
rules (k atoms, the relative residual tolerance, a dependent atom - ``d^2 <= 16 k eps G_jj``
- or a zero correlation), the same all-zero-sample behaviour and the same warning count.  It
uses the textbook Batch-OMP form (progressive Cholesky factor ``L`` of the chosen atoms'
Gram matrix, coefficients from two triangular solves, ``alpha = alpha0 - G_I gamma``) rather
than NumPy's scaled-direction form, so results are **not bit-identical** to NumPy's:
coefficients agree within ``rtol`` (below) and supports agree wherever the argmax is not a
near tie.  Each sample is coded on its own and its correlations are computed in a fixed
order (``correlate.c``), so results do not depend on the batch split.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ...backend import BackendUnavailable, OMPWorkspace, SparseCodes
from ..blas import BlasBackend
from .bound import (
    BasisWorkspace,
    EncodePlan,
    PredictPlan,
    SparseLayerPlan,
    bad_index,
    ptr,
    transposed_zeros,
)
from .build import build_library, load, load_error

__all__ = ["NativeBackend", "build_library"]


class NativeBackend(BlasBackend):
    """BLAS backend plus C kernels for Batch-OMP's iterations and the k-sparse products.

    Parameters
    ----------
    block : int, default=128
        Rows per matrix product, as for :class:`~hal.backends.numpy.NumpyBackend`.  Twice
        NumPy's default: with the iterations in C the correlation GEMM is most of the time,
        and at m=5625 128-row products ran ~10% faster per sample than 64-row ones
        (measured, one OpenBLAS thread).  The streaming transform passes its own ``block``.
    batch, threads
        As for :class:`~hal.backends.blas.BlasBackend`.

    Tolerances against NumPy (tests/backend): products, including the k-sparse ones,
    ``|got - ref| <= rtol * (|A| @ |B|)`` with rtol 1e-5 (float32), 1e-13 (float64); OMP: the
    same supports wherever the argmax is not a near tie, coefficients within 1e-4 (float32)
    and 1e-10 (float64) of the largest one.
    """

    name = "native"
    bit_identical = False
    # the kernel codes each sample on its own and its correlations and |x|^2 come in a fixed
    # order: a lone sample needs no partner (see NumpyBackend.omp_encode)
    _lone_as_pair = False
    compiled_execution = False  # its own plans are the per-row kernels
    rtol = {"float32": 1e-5, "float64": 1e-13}

    def __init__(self, block: int = 128, batch: int = 256, threads: Optional[int] = None,
                 **options) -> None:
        super().__init__(block=block, batch=batch, threads=threads, **options)
        lib = load()
        if lib is None:
            raise BackendUnavailable(f"backend 'native' cannot run: {load_error()}")
        self._nffi, self._nlib, self.kernel_path = lib

    #: products up to this many multiply-adds go to ``numpy.matmul`` (see BlasBackend): a
    #: (1, 5625) x (5625, 50) projection-error product took 28 us through cffi and 15 us
    #: through NumPy (measured); the choice depends only on the shapes
    small_product = 1 << 22

    @classmethod
    def probe(cls) -> Optional[str]:
        why = BlasBackend.probe()
        if why is not None:
            return why
        return None if load() is not None else load_error()

    # -- Batch-OMP ----------------------------------------------------------------------
    def prepare_omp(self, batch, m, l, k, dtype) -> OMPWorkspace:
        """Buffers for chunks of up to ``batch`` samples: the correlations, |x|^2, the padded
        last block, and the kernel's per-sample scratch (no per-iteration state)."""
        dtype = np.dtype(dtype)
        batch = max(2, int(min(batch, self.batch)) if batch else self.batch)
        k = int(min(k, l))
        kk = max(k, 1)
        blk = self.block
        sfx = "f32" if dtype == np.float32 else "f64"
        a = {
            "corr": np.empty((batch, l), dtype),
            "xx": np.zeros(batch, dtype),
            "scratch": np.zeros(l + kk * l + kk * kk + 4 * kk, dtype),
            # the correlation kernel's accumulators, and D.T as it reads it: (m, lw), lw a
            # whole number of vectors, zero-padded (filled by omp_encode)
            "acc": np.zeros(int(getattr(self._nlib, "correlate_scratch_" + sfx)(l)), dtype),
            "DTp": transposed_zeros(self._nlib, m, l, dtype),
        }
        return OMPWorkspace(batch=batch, m=m, l=l, k=k, dtype=dtype, block=blk, arrays=a)

    def omp_encode(self, X, D, G, k, tol=None, ws=None) -> SparseCodes:
        n, m = X.shape
        l = D.shape[0]
        kk = int(min(k, l))
        if ws is None or "scratch" not in ws.arrays or ws.block != self.block \
                or not ws.fits(min(n, ws.batch), m, l, kk, X.dtype):
            ws = self.prepare_omp(min(n, self.batch), m, l, kk, X.dtype)
        if not (ws.fixed_D and ws.dt_filled):  # the kernel's copy of D.T (see prepare_omp)
            ws.arrays["DTp"][:, :l] = D.T
            ws.dt_filled = True
        return super().omp_encode(X, D, G, k, tol=tol, ws=ws)

    def _chunk_correlations(self, X, DT, A, corr=None):
        """The chunk's correlations and ``|x|^2`` from the fixed-order kernel (``correlate.c``):
        each value is a dot product in an order of its own, so a sample's code is the same
        alone or in any batch, without NumPy's zero-padded 16-row tiles."""
        n = X.shape[0]
        c, xx = A["corr"][:n], A["xx"][:n]
        if corr is not None:
            return super()._chunk_correlations(X, DT, A, corr)
        dt = X.dtype
        X = np.ascontiguousarray(X)
        DTp = A["DTp"]  # filled by omp_encode
        ffi = self._nffi
        fn, ct = (self._nlib.correlate_f32, "float *") if dt == np.float32 else \
            (self._nlib.correlate_f64, "double *")
        fn(n, c.shape[1], X.shape[1], ptr(ffi, ct, X), X.shape[1], ptr(ffi, ct, DTp),
           DTp.shape[1], ptr(ffi, ct, c), c.shape[1], ptr(ffi, ct, xx), ptr(ffi, ct, A["acc"]))
        return c, xx

    def _omp_chunk(self, X, DT, G, k, tol, ws, idx, val, nnz, resid_out, corr=None) -> int:
        n = X.shape[0]
        A = ws.arrays
        l = ws.l
        dt = X.dtype
        if G.shape != (l, l):  # the kernel reads l rows of l
            raise ValueError(f"omp: G should be the ({l}, {l}) Gram matrix of the atoms, got "
                             f"{G.shape}")
        c, xx = self._chunk_correlations(X, DT, A, corr)
        G = np.ascontiguousarray(G, dtype=dt)
        ffi, lib = self._nffi, self._nlib
        if dt == np.float32:
            fn, ct = lib.omp_f32, "float *"
        else:
            fn, ct = lib.omp_f64, "double *"
        # the outputs are row slices of C-contiguous (N, k) arrays
        for arr in (idx, val):
            if not arr.flags.c_contiguous:
                raise ValueError("omp outputs must be C-contiguous")
        tol2 = -1.0 if tol is None else float(tol) ** 2
        return int(fn(n, l, k, k, ptr(ffi, ct, c), ptr(ffi, ct, xx), ptr(ffi, ct, G), l, tol2,
                      float(np.finfo(dt).eps), ptr(ffi, ct, A["scratch"]),
                      ptr(ffi, "int *", idx), ptr(ffi, ct, val), ptr(ffi, "int *", nnz),
                      ptr(ffi, ct, resid_out)))

    def prepare_encode(self, D, G, k, tol=None, mean=None, scale=None, width=None):
        """A dictionary bound to the one-call ``encode`` kernel (see :class:`EncodePlan`):
        finiteness check, standardization, correlations and Batch-OMP of a whole batch in
        one cffi call, the same bits as :meth:`omp_encode` on the standardized batch."""
        if D.dtype not in (np.float32, np.float64):
            return super().prepare_encode(D, G, k, tol=tol, mean=mean, scale=scale,
                                          width=width)
        return EncodePlan(self._nffi, self._nlib, D, np.ascontiguousarray(G), k, tol=tol,
                          mean=mean, scale=scale, width=width)

    def transposed_atoms(self, lb, m, dtype) -> np.ndarray:
        """A zeroed array for up to ``lb`` atoms of ``m`` features transposed as the
        encode kernel reads them ((m + 1, lw), lw a whole number of vectors; the last row
        zero, see :class:`BasisWorkspace`), for :meth:`encode_plan_over`."""
        return transposed_zeros(self._nlib, m + 1, lb, dtype)

    def encode_plan_over(self, DT, G, l, k, tol=None, mean=None, scale=None, width=None):
        """An :class:`EncodePlan` over the first ``l`` columns of ``DT`` (from
        :meth:`transposed_atoms`, kept, not copied) and ``G`` (rows of at least ``l``): the
        execution phase of another backend's transform (:mod:`hal.execution`)."""
        return EncodePlan(self._nffi, self._nlib, None, G, k, tol=tol, mean=mean, scale=scale,
                          width=width, DT=DT, l=l)

    def prepare_predict(self, plan, mean, scale, code_scale, layers):
        """A learner's one-sample predict in one kernel call (see :class:`PredictPlan`):
        the encode of ``plan`` (one made by this backend, without statistics of its own) on
        the row standardized by ``mean`` and ``scale``, the codes times ``code_scale``, the
        network's ``layers``; None where that does not apply (another plan or dtype)."""
        if not isinstance(plan, EncodePlan) or plan.mean is not None:
            return None
        return PredictPlan(self._nffi, self._nlib, plan, mean, scale, code_scale, layers)

    # -- the streaming transform -------------------------------------------------------
    def prepare_basis(self, D, G, Li) -> "BasisWorkspace":
        """Bind the transform's state arrays (D (lb, m), G and Li (lb, lb); C-contiguous, one
        float dtype, kept for the workspace's life) to the ``stream`` kernel: Algorithm 2 on
        a batch in one call (see :class:`BasisWorkspace`)."""
        return BasisWorkspace(self._nffi, self._nlib, D, G, Li)

    def prepare_stored_basis(self, Dq, scale, G, Li):
        """:meth:`prepare_basis` for atoms stored as float16, or int8 with a float32 ``scale``
        per atom (compute in float32): the products read the stored atoms in ``stored.c``
        (see :mod:`.stored`); float64 compute gets the NumPy reference's tiles."""
        from ..numpy.stored import StoredBasisWorkspace as Reference
        from .stored import StoredBasisWorkspace
        cls = StoredBasisWorkspace if G.dtype == np.float32 else Reference
        return cls(self, Dq, scale, G, Li)

    def project(self, Q, x, out, h=None, u=None):
        """``out[:] = Q @ x`` and ``u -= h @ Q`` in one pass over Q (the basis kernels'
        primitive; each ``out[j]`` is a dot product in a fixed order of its own,
        bit-identical whatever the number of rows and whether ``u`` is updated)."""
        dt = Q.dtype
        arrays = [a for a in (Q, x, out, h, u) if a is not None]
        if dt not in (np.float32, np.float64) or Q.ndim != 2 or any(
                a.dtype != dt or not a.flags.c_contiguous for a in arrays) \
                or (x is None) != (out is None) or (u is None) != (h is None):
            raise ValueError("project needs C-contiguous float32 or float64 arrays of one "
                             "dtype, x with out and u with h")
        n, m = Q.shape
        if (x is not None and (x.shape != (m,) or out.shape != (n,))) or \
                (u is not None and (u.shape != (m,) or h.shape != (n,))):
            raise ValueError(f"project needs Q (n, m), x and u (m,), out and h (n,); got Q "
                             f"{Q.shape}")
        ffi, lib = self._nffi, self._nlib
        fn, ct = (lib.project_f32, "float *") if dt == np.float32 else \
            (lib.project_f64, "double *")
        null = ffi.NULL
        fn(n, m, ptr(ffi, ct, Q), null if x is None else ptr(ffi, ct, x),
           null if out is None else ptr(ffi, ct, out), null if h is None else ptr(ffi, ct, h),
           null if u is None else ptr(ffi, ct, u))

    # -- k-sparse products --------------------------------------------------------------
    def prepare_sparse_layer(self, W, b, y, gW, gb):
        """A dense layer fed compact codes in one kernel call per pass (see
        :class:`SparseLayerPlan`)."""
        return SparseLayerPlan(self._nffi, self._nlib, W, b, y, gW, gb)

    def _sparse_args(self, indices, values, W):
        indices = np.asarray(indices)
        if indices.dtype.kind not in "iu" or (indices.dtype.itemsize > 4 and indices.size and (
                int(indices.max()) > np.iinfo(np.int32).max
                or int(indices.min()) < np.iinfo(np.int32).min)):
            return None  # the reference's checks (an int32 cast would wrap it into range)
        dt = W.dtype
        if not (indices.dtype == np.int32 and values.dtype == dt and indices.flags.c_contiguous
                and values.flags.c_contiguous and W.flags.c_contiguous):  # the trainer's case
            dt = np.result_type(values, W)
            indices = np.ascontiguousarray(indices, dtype=np.int32)
            values = np.ascontiguousarray(values, dtype=dt)
            W = np.ascontiguousarray(W, dtype=dt)
        if dt not in (np.float32, np.float64) or indices.ndim != 2 \
                or values.shape != indices.shape or W.ndim != 2:
            return None
        return dt, indices, values, W

    def gather_matmul(self, indices, values, W, out=None):
        args = self._sparse_args(indices, values, W)
        if args is None:
            return super().gather_matmul(indices, values, W, out=out)
        dt, idx, val, W = args
        n, k = idx.shape
        q = W.shape[1]
        if out is None:
            out = np.empty((n, q), dt)
        elif out.shape != (n, q):
            raise ValueError(f"gather_matmul: out should have shape {(n, q)}, got {out.shape}")
        direct = out.dtype == dt and out.flags.c_contiguous
        dst = out if direct else np.empty((n, q), dt)
        ffi, lib = self._nffi, self._nlib
        fn, ct = (lib.gather_f32, "float *") if dt == np.float32 else (lib.gather_f64, "double *")
        bad = fn(n, k, q, W.shape[0], ptr(ffi, "int *", idx), ptr(ffi, ct, val),
                 ptr(ffi, ct, W), ptr(ffi, ct, dst))
        if bad:
            raise bad_index(idx, bad, W.shape[0])
        if not direct:
            out[...] = dst
        return out

    def scatter_matmul(self, indices, values, dy, out, beta=0.0):
        """``out = beta * out + codes.T @ dy`` for compact codes (the gradient of
        :meth:`gather_matmul` with respect to ``W``); ``out`` (rows, q) is written in place."""
        args = self._sparse_args(indices, values, dy)
        if args is None or out.dtype != args[0] or not out.flags.c_contiguous:
            return super().scatter_matmul(indices, values, dy, out, beta=beta)
        dt, idx, val, dy = args
        n, k = idx.shape
        if dy.shape[0] != n or out.ndim != 2 or out.shape[1] != dy.shape[1]:
            raise ValueError(f"scatter_matmul: dy should have {n} rows (one per code) and "
                             f"out {dy.shape[1]} columns; got dy {dy.shape}, out {out.shape}")
        ffi, lib = self._nffi, self._nlib
        fn, ct = (lib.scatter_f32, "float *") if dt == np.float32 else \
            (lib.scatter_f64, "double *")
        bad = fn(n, k, dy.shape[1], out.shape[0], ptr(ffi, "int *", idx), ptr(ffi, ct, val),
                 ptr(ffi, ct, dy), float(beta), ptr(ffi, ct, out))
        if bad:
            raise bad_index(idx, bad, out.shape[0])
        return out
