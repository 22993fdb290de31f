"""The BLAS backend: matrix products through cffi (ABI mode) on an OpenBLAS library.

The library is ``scipy-openblas32``'s (PyPI; stable ``scipy_cblas_*`` symbols, 32-bit ints),
falling back to a system OpenBLAS (``libopenblas.so.0``, plain ``cblas_*`` symbols).  No
compiler is needed: cffi only ``dlopen``\\s the library.

Every product of :class:`~hal.backends.numpy.NumpyBackend` goes through :meth:`matmul`, so
overriding it accelerates OMP's GEMMs too.  Strided operands are passed as they are: a
row-major view is ``NoTrans`` with its row stride as leading dimension, a transposed
(column-major) view is ``Trans`` with its column stride; only views with neither layout (or a
negative stride) are copied.  ``out`` is written in place when its rows are contiguous.

Small products go to ``numpy.matmul`` instead (:attr:`BlasBackend.small_product`): a cffi
call costs ~5 us of Python, against < 1 us for NumPy's own call into its BLAS, and a single
row or column (batch-1 inference) runs as NumPy's ``?gemv``, where ``?gemm`` with one row
packs the whole matrix first (~3x slower for a 5625 x 1024 layer, measured).  ``gemm`` (the
in-place ``alpha a @ b + beta out``, which NumPy cannot do) always calls ``?gemm``.

Tolerance against NumPy: not promised bit-identical (another OpenBLAS build may pick other
kernels); relative error ``<= rtol * (|A| @ |B|)`` elementwise with ``rtol`` = 1e-5 (float32)
and 1e-13 (float64).  Other dtypes and mixed dtypes fall back to ``numpy.matmul``.
"""
from __future__ import annotations

import ctypes.util
import os
from typing import Optional

import numpy as np

from .. import threads as _threads
from ..backend import BackendUnavailable
from .numpy import NumpyBackend

__all__ = ["BlasBackend", "find_library"]

_CBLAS_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_LIB = None            # (ffi, lib, sgemm, dgemm, path)
_LOADED_PATH: Optional[str] = None  # read by hal.threads to set this library's threads
_LOAD_ERROR: Optional[str] = None

_CDEF = """
void {p}sgemm(int, int, int, int, int, int, float, const float *, int, const float *, int,
              float, float *, int);
void {p}dgemm(int, int, int, int, int, int, double, const double *, int, const double *, int,
              double, double *, int);
"""


def find_library():
    """Candidate ``(path, symbol_prefix)`` pairs, best first."""
    out = []
    try:
        import scipy_openblas32 as sob
        lib_dir, stem = sob.get_lib_dir(), "lib" + sob.get_library()
        for f in sorted(os.listdir(lib_dir)):
            if f.startswith(stem) and (".so" in f or f.endswith(".dylib")):
                out.append((os.path.join(lib_dir, f), "scipy_cblas_"))
                break
    except (ImportError, OSError, AttributeError):
        pass
    for name in ("openblas", "openblas64_"):
        path = ctypes.util.find_library(name)
        if path:
            out.append((path, "cblas_"))
    out.append(("libopenblas.so.0", "cblas_"))
    return out


def _set_library_threads(n: Optional[int]) -> None:
    """Set the loaded library's OpenBLAS thread count (no-op for None or without the symbol)."""
    entry = _threads._blas_backend_lib()
    if n is not None and entry is not None and entry[0] is not None:
        getattr(entry[0], entry[3][1])(int(n))


def _load():
    global _LIB, _LOADED_PATH, _LOAD_ERROR
    if _LIB is not None or _LOAD_ERROR is not None:
        return _LIB
    try:
        import cffi
    except ImportError:
        _LOAD_ERROR = "cffi is not installed (pip install cffi)"
        return None
    errors = []
    for path, prefix in find_library():
        ffi = cffi.FFI()
        ffi.cdef(_CDEF.format(p=prefix))
        try:
            lib = ffi.dlopen(path)
            sgemm, dgemm = getattr(lib, prefix + "sgemm"), getattr(lib, prefix + "dgemm")
        except (OSError, AttributeError) as exc:
            errors.append(f"{path}: {exc}")
            continue
        _LIB = (ffi, lib, sgemm, dgemm, path)
        _LOADED_PATH = path
        _set_library_threads(_threads.default_backend_threads())
        return _LIB
    _LOAD_ERROR = ("no OpenBLAS found (pip install scipy-openblas32, or apt-get install "
                   "libopenblas0); tried " + "; ".join(errors))
    return None


def _layout(x: np.ndarray):
    """``(trans, ld)`` to pass ``x`` (2-D) to row-major GEMM without a copy, or None."""
    isz = x.itemsize
    r, c = x.shape
    s0, s1 = x.strides
    if c == 1:
        s1 = isz
    if r == 1:
        s0 = max(c, 1) * isz
    if s1 == isz and s0 % isz == 0 and s0 >= max(c, 1) * isz:
        return _NO_TRANS, s0 // isz
    if s0 == isz and s1 % isz == 0 and s1 >= max(r, 1) * isz:
        return _TRANS, s1 // isz
    return None


class BlasBackend(NumpyBackend):
    """NumPy backend whose matrix products call OpenBLAS's ``?gemm`` directly through cffi.

    Parameters
    ----------
    block, batch : int
        As for :class:`~hal.backends.numpy.NumpyBackend`.
    threads : int, optional
        Thread count of this backend's OpenBLAS (default: see
        :func:`hal.threads.default_backend_threads`: the count given to
        ``hal.threads.set_num_threads``, else ``OPENBLAS_NUM_THREADS``, else 1).

    Tolerances against NumPy (see the module docstring): ``|got - ref| <= rtol * (|A| @ |B|)``
    with rtol 1e-5 (float32), 1e-13 (float64); OMP indices identical on well-separated data.
    """

    name = "blas"
    bit_identical = False
    rtol = {"float32": 1e-5, "float64": 1e-13}
    fused_gemm = True
    #: the execution phase on the native per-row kernels where they build (hal.execution)
    compiled_execution = True
    #: products of at most this many multiply-adds (``m k n``), and those with one row or
    #: one column, run as ``numpy.matmul`` (its call overhead is ~5 us less than cffi's;
    #: equal speed from ~2^20 up, measured on the trainer's and OMP's shapes)
    small_product = 1 << 20

    def __init__(self, block: int = 64, batch: int = 256, threads: Optional[int] = None,
                 **options) -> None:
        super().__init__(block=block, batch=batch, **options)
        if threads is not None:
            self.options["threads"] = threads
        lib = _load()
        if lib is None:
            raise BackendUnavailable(f"backend 'blas' cannot run: {_LOAD_ERROR}")
        self._ffi, _, self._sgemm, self._dgemm, self.library_path = lib
        if threads is not None:
            if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
                raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
            _set_library_threads(threads)

    @classmethod
    def probe(cls) -> Optional[str]:
        return None if _load() is not None else _LOAD_ERROR

    def _gemm(self, a, b, out, beta, alpha=1.0):
        """``out = alpha * (a @ b) + beta * out`` for float32/float64 2-D arrays of one
        dtype."""
        m, k = a.shape
        n = b.shape[1]
        ffi = self._ffi
        if a.dtype == np.float32:
            fn, ctype = self._sgemm, "float *"
        else:
            fn, ctype = self._dgemm, "double *"
        la = _layout(a)
        if la is None:
            a = np.ascontiguousarray(a)
            la = (_NO_TRANS, max(k, 1))
        lb = _layout(b)
        if lb is None:
            b = np.ascontiguousarray(b)
            lb = (_NO_TRANS, max(n, 1))
        # the addresses from ``ndarray.ctypes.data``, not ``__array_interface__``: on NumPy
        # 2.4 each ``__array_interface__`` call interns a new string, so a training run
        # churned the interpreter's interned-string table, whose rebuilds (0.96-1.9 MB, one
        # piece) landed in a long stream's measured peak (benchmarks/memory.py)
        fn(_CBLAS_ROW_MAJOR, la[0], lb[0], m, n, k, alpha,
           ffi.cast(ctype, a.ctypes.data), la[1],
           ffi.cast(ctype, b.ctypes.data), lb[1], beta,
           ffi.cast(ctype, out.ctypes.data),
           max(n, 1) if m == 1 else out.strides[0] // out.itemsize)

    def _product(self, a, b, out, beta, alpha=1.0):
        """``out = alpha * (a @ b) + beta * out`` (``out=None``: a new array, ``beta`` must
        be 0) through one ``?gemm`` call, or None for operands it does not take (NumPy's
        then)."""
        if (a.ndim != 2 or b.ndim != 2 or a.dtype != b.dtype
                or a.dtype not in (np.float32, np.float64)
                or a.shape[1] != b.shape[0] or out is not None and out.dtype != a.dtype):
            return None  # not ours: numpy handles (and raises the usual errors)
        m, k = a.shape
        n = b.shape[1]
        if out is None:
            out = np.empty((m, n), a.dtype)
        elif out.shape != (m, n):
            raise ValueError(f"out has shape {out.shape}, expected {(m, n)} for "
                             f"{a.shape} @ {b.shape}")
        if m == 0 or n == 0:
            return out
        if k == 0:  # an empty sum: out = beta * out
            if beta == 0:
                out[...] = 0
            elif beta != 1:
                out *= beta
            return out
        isz = out.itemsize
        direct = ((n == 1 or out.strides[1] == isz)
                  and (m == 1 or (out.strides[0] % isz == 0 and out.strides[0] >= n * isz))
                  and out.flags.writeable and not np.may_share_memory(out, a)
                  and not np.may_share_memory(out, b))
        if direct:
            self._gemm(a, b, out, beta, alpha)
            return out
        tmp = np.empty((m, n), a.dtype)
        if beta:
            tmp[...] = out
        self._gemm(a, b, tmp, beta, alpha)
        out[...] = tmp
        return out

    def _small(self, a, b, out) -> bool:
        """Whether ``a @ b`` is NumPy's: 2-D, small or a single row/column, and ``out``
        (if any) with contiguous rows, which NumPy's BLAS path writes without a copy."""
        sa, sb = a.shape, b.shape
        if len(sa) != 2 or len(sb) != 2:
            return False
        return ((sa[0] == 1 or sb[1] == 1 or sa[0] * sa[1] * sb[1] <= self.small_product)
                and (out is None or out.flags.c_contiguous))

    def matmul(self, a, b, out=None):
        if self._small(a, b, out):
            return np.matmul(a, b, out=out)
        res = self._product(a, b, out, 0.0)
        return np.matmul(a, b, out=out) if res is None else res

    def gemm(self, a, b, out, alpha=1.0, beta=0.0):
        """``out[...] = alpha * (a @ b) + beta * out`` in place, as one ``?gemm`` call that
        reads and writes ``out`` itself when its rows are contiguous and it overlaps neither
        operand (else through a temporary); ``a`` and ``b`` are passed with their strides
        (a view that is neither row- nor column-major is copied).  Other or mixed dtypes
        take the reference's NumPy path."""
        res = self._product(a, b, out, float(beta), float(alpha)) \
            if out is not None and out.ndim == 2 else None
        return super().gemm(a, b, out, alpha, beta) if res is None else res

    def dense_forward(self, X, W, b=None, out=None):
        if b is None:
            return self.matmul(X, W, out=out)
        if self._small(X, W, out):
            out = np.matmul(X, W, out=out)
            out += b
            return out
        if out is None and X.ndim == 2 and W.ndim == 2:
            out = np.empty((X.shape[0], W.shape[1]), np.result_type(X, W))
        if out is not None and X.ndim == 2 and W.ndim == 2 and \
                out.shape == (X.shape[0], W.shape[1]):
            # bias first, then GEMM with beta=1 adds the product in the same pass
            np.copyto(out, b, casting="same_kind")
            if self._product(X, W, out, 1.0) is not None:
                return out
        return super().dense_forward(X, W, b, out=out)
