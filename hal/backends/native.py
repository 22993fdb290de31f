"""The native backend: small C kernels for the loops NumPy cannot vectorize well.

Batch-OMP spends, after the correlation GEMM, k iterations of small per-sample work (an
argmax over l atoms, a triangular solve of size t, an update of l correlations): O(k^2 l)
operations per sample that NumPy runs as dozens of array calls per iteration.  Here they are
one C loop per sample, and the k-sparse first-layer products of the trainer
(``gather_matmul`` and its transpose) are too.  Every matrix product still goes through the
BLAS backend (OpenBLAS through cffi), which this backend extends.

Building.  The C source below is compiled on first use with the system C compiler (``cc``,
or ``$CC``) into a shared library that cffi loads in ABI mode: no Python headers are needed,
only a compiler.  The library is cached under ``$TINYDL_CACHE`` (default
``~/.cache/tinydl``), keyed by a hash of the source, the flags, the machine and the compiler,
and written atomically (temporary name, then rename), so concurrent first uses are safe.
``-march=native`` is tried first, then portable flags.  :meth:`NativeBackend.probe` says why
the backend cannot run (no cffi, no compiler, a failed build).

Semantics.  The OMP kernel implements the contract of
:meth:`hal.backends.numpy.NumpyBackend.omp_encode` (the specification): the same stopping
rules (k atoms, the relative residual tolerance, a dependent atom - ``d^2 <= 16 k eps G_jj``
- or a zero correlation), the same all-zero-sample behaviour and the same warning count.  It
uses the textbook Batch-OMP form (progressive Cholesky factor ``L`` of the chosen atoms'
Gram matrix, coefficients from two triangular solves, ``alpha = alpha0 - G_I gamma``) rather
than NumPy's scaled-direction form, so results are **not bit-identical** to NumPy's:
coefficients agree within ``rtol`` (below) and supports agree wherever the argmax is not a
near tie.  Each sample is coded on its own, so results do not depend on the batch split
(the correlations come from the same fixed-size row blocks as NumPy's).
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from typing import Optional

import numpy as np

from ..backend import BackendUnavailable, OMPResult, OMPWorkspace
from .blas import BlasBackend

__all__ = ["NativeBackend", "build_library"]

# One template, instantiated for float (suffix f32) and double (f64).
_TEMPLATE = r"""
/* Batch-OMP of n samples from their correlations alpha0 = D x (rows of corr, length l),
   the Gram matrix G = D D^T (l x l, row-major) and |x|^2 (xx), in the scaled-direction form
   of the specification (hal/backends/numpy.py): Y[t] = b_t (G[j_t] - sum_s rho_s u_s Y[s]),
   c -= Y[t], coefficients by one back substitution at the end.
   Outputs: idx/val (n x k, row-major; -1 / 0 pad samples that stopped early), nnz, resid
   (squared residual norm).  tol2 < 0: no tolerance; else stop once |r|^2 <= tol2 |x|^2.
   ws: l + k*l + k*k + 4*k scratch values.  Returns the number of samples stopped by a
   dependent atom while a residual above rounding level was left (the caller warns). */
long omp_SFX(long n, long l, long k, const REAL *corr, const REAL *xx, const REAL *G,
             REAL tol2, REAL eps, REAL *ws, int *idx, REAL *val, int *nnz, REAL *resid)
{
    long dependent = 0;
    REAL *c = ws;                /* the residual's correlations */
    REAL *Y = c + l;             /* Y[s] = b_s D q_s, row s of k x l */
    REAL *U = Y + k * l;         /* U[t * k + s] = Y[s][j_t], s < t */
    REAL *B = U + k * k;         /* b_t = c_j / d_t^2 */
    REAL *CJ = B + k;            /* c_j at step t */
    REAL *NRHO = CJ + k;         /* -d_t^2 / c_j^2 */
    REAL *RU = NRHO + k;         /* -rho_s u_s of this step */
    const REAL kk = (REAL)(k > 1 ? k : 1);
    const REAL tiny = 16 * kk * eps;
    for (long i = 0; i < n; i++) {
        const REAL *a0 = corr + i * l;
        int *J = idx + i * k;
        REAL *v = val + i * k;
        for (long t = 0; t < k; t++) { J[t] = -1; v[t] = 0; }
        const REAL x2 = xx[i];
        REAL proj = 0;           /* sum_t b_t c_j(t) = |projection|^2 */
        long T = 0;
        const REAL limit = tol2 >= 0 ? x2 * tol2 : 0;
        /* an all-zero sample takes no atom; under a tolerance, nor does one already within */
        if (x2 > 0 && !(tol2 >= 0 && !(x2 > limit))) {
            const REAL noise = x2 * 4 * kk * eps;
            for (long q = 0; q < l; q++) c[q] = a0[q];
            for (long t = 0; t < k; t++) {
                /* argmax |c|, the first of ties.  |c| compared as the integers of its bits
                   (sign bit cleared: the same order for finite values), which the compiler
                   vectorizes; a float max reduction it keeps scalar */
                const UINT *bits = (const UINT *)c;
                UINT best = 0;
                for (long q = 0; q < l; q++) {
                    UINT b = bits[q] & ABSMASK;
                    best = b > best ? b : best;
                }
                long j = 0;
                while (j < l - 1 && (bits[j] & ABSMASK) != best) j++;
                const REAL cj = c[j];
                const REAL gj = G[j * l + j];
                REAL d2 = 0;
                REAL *u = U + t * k;
                for (long s = 0; s < t; s++) {
                    u[s] = Y[s * l + j];
                    RU[s] = NRHO[s] * u[s];
                    d2 += RU[s] * u[s];
                }
                d2 += gj;                     /* d^2 = G_jj - sum_s rho_s u_s^2 */
                if (!(d2 > gj * tiny)) {      /* j lies in the span of the chosen atoms */
                    if (x2 - proj > noise) dependent++;
                    break;
                }
                const REAL b = cj / d2;
                if (b == 0) break;            /* residual orthogonal to every atom */
                REAL *Yt = Y + t * l;
                const REAL *Gj = G + j * l;
                /* Y[t] = b (G[j] + sum_s RU[s] Y[s]) in blocks of QB columns held in
                   registers across the sum (one pass over each Y[s], one store of Y[t]) */
                long q0 = 0;
                for (; q0 + QB <= l; q0 += QB) {
                    REAL acc[QB];
                    for (long q = 0; q < QB; q++) acc[q] = Gj[q0 + q];
                    for (long s = 0; s < t; s++) {
                        const REAL r = RU[s];
                        const REAL *restrict Ys = Y + s * l + q0;
                        for (long q = 0; q < QB; q++) acc[q] += r * Ys[q];
                    }
                    for (long q = 0; q < QB; q++) {
                        Yt[q0 + q] = acc[q] * b;
                        c[q0 + q] -= acc[q] * b;
                    }
                }
                for (long q = q0; q < l; q++) {
                    REAL acc = Gj[q];
                    for (long s = 0; s < t; s++) acc += RU[s] * Y[s * l + q];
                    Yt[q] = acc * b;
                    c[q] -= acc * b;
                }
                /* the chosen atom's correlation is 0 up to rounding: make it exact, so that
                   it is picked again only when every correlation is rounding noise (d^2 ~ 0
                   then stops the sample) */
                c[j] = 0;
                B[t] = b;
                CJ[t] = cj;
                NRHO[t] = -(d2 / (cj * cj));
                J[t] = (int)j;
                T = t + 1;
                proj += b * cj;               /* |z_t|^2 = c_j^2 / d^2 */
                if (tol2 >= 0 && !(x2 - proj > limit)) break;
            }
            /* gamma_t = b_t - (1 / c_j(t)) sum_{s > t} U[s, t] gamma_s */
            for (long t = T - 1; t >= 0; t--) {
                REAL acc = 0;
                for (long s = t + 1; s < T; s++) acc += U[s * k + t] * v[s];
                v[t] = t < T - 1 ? B[t] - acc / CJ[t] : B[t];
            }
        }
        nnz[i] = (int)T;
        resid[i] = x2 - proj > 0 ? x2 - proj : 0;
    }
    return dependent;
}

/* 0 if every index lies in [-1, rows), else 1 + the flat position of the first that does
   not (checked before anything is read or written through them) */
static long bad_index_SFX(long nk, const int *idx, long rows)
{
    for (long p = 0; p < nk; p++)
        if (idx[p] < -1 || idx[p] >= rows) return p + 1;
    return 0;
}

/* out[i, :] = sum_t val[i, t] * W[idx[i, t], :] (idx < 0: nothing); W is (rows, q). */
long gather_SFX(long n, long k, long q, long rows, const int *idx, const REAL *val,
                const REAL *W, REAL *out)
{
    long bad = bad_index_SFX(n * k, idx, rows);
    if (bad) return bad;
    for (long i = 0; i < n; i++) {
        REAL *o = out + i * q;
        for (long c = 0; c < q; c++) o[c] = 0;
        for (long t = 0; t < k; t++) {
            const int r = idx[i * k + t];
            if (r < 0) continue;
            const REAL a = val[i * k + t];
            const REAL *Wr = W + (long)r * q;
            for (long c = 0; c < q; c++) o[c] += a * Wr[c];
        }
    }
    return 0;
}

/* out = beta * out + sum_i sum_t val[i, t] * outer(e_idx[i, t], dy[i, :]): the transposed
   k-sparse product codes^T @ dy, out (rows, q), dy (n, q).  beta is 0 or 1 (or any value). */
long scatter_SFX(long n, long k, long q, long rows, const int *idx, const REAL *val,
                 const REAL *dy, REAL beta, REAL *out)
{
    long bad = bad_index_SFX(n * k, idx, rows);
    if (bad) return bad;
    if (beta == 0) { for (long c = 0; c < rows * q; c++) out[c] = 0; }
    else if (beta != 1) { for (long c = 0; c < rows * q; c++) out[c] *= beta; }
    for (long i = 0; i < n; i++) {
        const REAL *g = dy + i * q;
        for (long t = 0; t < k; t++) {
            const int r = idx[i * k + t];
            if (r < 0) continue;
            const REAL a = val[i * k + t];
            REAL *o = out + (long)r * q;
            for (long c = 0; c < q; c++) o[c] += a * g[c];
        }
    }
    return 0;
}
"""


def _source() -> str:
    head = "#include <math.h>\n#include <stdint.h>\n"
    parts = [head]
    # QB: columns per register block of the direction update (4 AVX2 registers)
    for real, sfx, sqrt, uint, mask, qb in (
            ("float", "f32", "sqrtf", "uint32_t", "0x7fffffffu", 32),
            ("double", "f64", "sqrt", "uint64_t", "0x7fffffffffffffffull", 16)):
        parts.append(f"#define REAL {real}\n#define SQRT {sqrt}\n#define UINT {uint}\n"
                     f"#define ABSMASK {mask}\n#define QB {qb}\n" + _TEMPLATE.replace("SFX", sfx)
                     + "#undef REAL\n#undef SQRT\n#undef UINT\n#undef ABSMASK\n#undef QB\n")
    return "".join(parts)


_CDEF = """
long omp_f32(long, long, long, const float *, const float *, const float *, float, float,
             float *, int *, float *, int *, float *);
long omp_f64(long, long, long, const double *, const double *, const double *, double, double,
             double *, int *, double *, int *, double *);
long gather_f32(long, long, long, long, const int *, const float *, const float *, float *);
long gather_f64(long, long, long, long, const int *, const double *, const double *,
                double *);
long scatter_f32(long, long, long, long, const int *, const float *, const float *, float,
                 float *);
long scatter_f64(long, long, long, long, const int *, const double *, const double *, double,
                 double *);
"""

# -O3 vectorizes the inner loops; no -ffast-math: the kernels must keep IEEE semantics
# (NaN comparisons in the stopping rules, no reassociation of the reductions)
_FLAG_SETS = (["-O3", "-march=native", "-fPIC", "-shared"], ["-O2", "-fPIC", "-shared"])

_LOCK = threading.Lock()
_LIB = None     # (ffi, lib, path)
_ERROR: Optional[str] = None


def _compiler() -> Optional[str]:
    cc = os.environ.get("CC", "").strip()
    if cc:
        return shutil.which(cc.split()[0]) and cc
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return name
    return None


def _cache_dir() -> str:
    base = os.environ.get("TINYDL_CACHE", "").strip()
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
        base = os.path.join(xdg or os.path.join(os.path.expanduser("~"), ".cache"), "tinydl")
    return os.path.join(base, "native")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(("model name", "flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor()


def build_library(force: bool = False) -> str:
    """Compile the kernels (or find them in the cache); return the shared library's path.

    Raises
    ------
    BackendUnavailable
        No C compiler, or every flag set failed (the compiler's last message is included).
    """
    cc = _compiler()
    src = _source()
    errors = []
    for flags in _FLAG_SETS:
        key = hashlib.sha256("\0".join([src, " ".join(flags), str(cc), platform.machine(),
                                        sys.platform, _cpu_model()]).encode()).hexdigest()[:16]
        path = os.path.join(_cache_dir(), f"tinydl_native_{key}.so")
        if os.path.exists(path) and not force:
            return path
        if cc is None:
            raise BackendUnavailable("backend 'native' needs a C compiler to build its kernels "
                                     "(none of $CC, cc, gcc, clang found; e.g. apt-get install "
                                     "gcc)")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as tmp:
            c_file = os.path.join(tmp, "kernels.c")
            with open(c_file, "w", encoding="utf-8") as fh:
                fh.write(src)
            out = os.path.join(tmp, "kernels.so")
            cmd = cc.split() + flags + ["-o", out, c_file, "-lm"]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.TimeoutExpired) as exc:
                errors.append(f"{' '.join(cmd)}: {exc}")
                continue
            if proc.returncode != 0:
                errors.append(f"{' '.join(flags)}: {proc.stderr.strip()[-400:]}")
                continue
            os.replace(out, path)  # atomic: a concurrent build writes the same bytes
        return path
    raise BackendUnavailable("backend 'native' could not build its kernels with "
                             f"{cc}: " + " | ".join(errors))


def _load():
    global _LIB, _ERROR
    with _LOCK:
        if _LIB is not None or _ERROR is not None:
            return _LIB
        try:
            import cffi
        except ImportError:
            _ERROR = "cffi is not installed (pip install cffi)"
            return None
        try:
            path = build_library()
            ffi = cffi.FFI()
            ffi.cdef(_CDEF)
            lib = ffi.dlopen(path)
        except BackendUnavailable as exc:
            _ERROR = str(exc)
            return None
        except OSError as exc:
            _ERROR = f"backend 'native': cannot load its kernels: {exc}"
            return None
        _LIB = (ffi, lib, path)
        return _LIB


def _bad_index(idx: np.ndarray, pos: int, rows: int) -> IndexError:
    """The error for a kernel's report of an index outside [-1, rows) (nothing was written)."""
    i, t = divmod(pos - 1, idx.shape[1])
    return IndexError(f"code indices must lie in [-1, {rows}), got {int(idx[i, t])} at "
                      f"({i}, {t})")


_CTYPES = {np.dtype(np.float32): "float[]", np.dtype(np.float64): "double[]",
           np.dtype(np.int32): "int[]"}


def _ptr(ffi, _ctype, a: np.ndarray):
    """A C pointer into a C-contiguous array (``from_buffer``: ~4x cheaper than casting
    ``__array_interface__``'s address, which matters for the trainer's small products)."""
    return ffi.from_buffer(_CTYPES[a.dtype], a)


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
    sparse_kernels = True
    rtol = {"float32": 1e-5, "float64": 1e-13}

    def __init__(self, block: int = 128, batch: int = 256, threads: Optional[int] = None,
                 **options) -> None:
        super().__init__(block=block, batch=batch, threads=threads, **options)
        lib = _load()
        if lib is None:
            raise BackendUnavailable(f"backend 'native' cannot run: {_ERROR}")
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
        return None if _load() is not None else _ERROR

    # -- Batch-OMP ----------------------------------------------------------------------
    def prepare_omp(self, batch, m, l, k, dtype) -> OMPWorkspace:
        """Buffers for chunks of up to ``batch`` samples: the correlations, |x|^2, the padded
        last block, and the kernel's per-sample scratch (no per-iteration state)."""
        dtype = np.dtype(dtype)
        batch = max(2, int(min(batch, self.batch)) if batch else self.batch)
        k = int(min(k, l))
        kk = max(k, 1)
        blk = self.block
        a = {
            "corr": np.empty((batch, l), dtype),
            "xx": np.zeros(batch, dtype),
            "scratch": np.zeros(l + kk * l + kk * kk + 4 * kk, dtype),
            "pad_in": np.empty((blk, m), dtype),
            "pad_out": np.empty((blk, l), dtype),
        }
        if dtype == np.float32:
            a["DT"] = np.empty((m, l), dtype)  # see NumpyBackend.prepare_omp
        return OMPWorkspace(batch=batch, m=m, l=l, k=k, dtype=dtype, block=blk, arrays=a)

    def omp_encode(self, X, D, G, k, tol=None, ws=None) -> OMPResult:
        if ws is not None and "scratch" not in ws.arrays:
            ws = None  # a NumPy backend's workspace
        return super().omp_encode(X, D, G, k, tol=tol, ws=ws)

    def _omp_chunk(self, X, DT, G, k, tol, ws, idx, val, nnz, resid_out, corr=None) -> int:
        n = X.shape[0]
        A = ws.arrays
        l = ws.l
        dt = X.dtype
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
        return int(fn(n, l, k, _ptr(ffi, ct, c), _ptr(ffi, ct, xx), _ptr(ffi, ct, G), tol2,
                      float(np.finfo(dt).eps), _ptr(ffi, ct, A["scratch"]),
                      _ptr(ffi, "int *", idx), _ptr(ffi, ct, val), _ptr(ffi, "int *", nnz),
                      _ptr(ffi, ct, resid_out)))

    # -- k-sparse products --------------------------------------------------------------
    def _sparse_args(self, indices, values, W):
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
        direct = out.dtype == dt and out.flags.c_contiguous
        dst = out if direct else np.empty((n, q), dt)
        ffi, lib = self._nffi, self._nlib
        fn, ct = (lib.gather_f32, "float *") if dt == np.float32 else (lib.gather_f64, "double *")
        bad = fn(n, k, q, W.shape[0], _ptr(ffi, "int *", idx), _ptr(ffi, ct, val),
                 _ptr(ffi, ct, W), _ptr(ffi, ct, dst))
        if bad:
            raise _bad_index(idx, bad, W.shape[0])
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
        ffi, lib = self._nffi, self._nlib
        fn, ct = (lib.scatter_f32, "float *") if dt == np.float32 else \
            (lib.scatter_f64, "double *")
        bad = fn(n, k, dy.shape[1], out.shape[0], _ptr(ffi, "int *", idx), _ptr(ffi, ct, val),
                 _ptr(ffi, ct, dy), float(beta), _ptr(ffi, ct, out))
        if bad:
            raise _bad_index(idx, bad, out.shape[0])
        return out
