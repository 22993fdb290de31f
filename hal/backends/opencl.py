"""The OpenCL backend (pyopencl): tiled GEMM kernels for the transform's and the layers' products.

What runs on the device
-----------------------
* ``matmul`` / ``correlate`` / ``dense_forward``: a register-blocked, local-memory-tiled GEMM
  (64 x 64 tile per work-group of 16 x 16 work-items, 4 x 4 outputs each, K in steps of 16;
  edges zero-padded in local memory, so any shape works).  ``B`` stored transposed (``X @ D.T``
  with ``D`` row-major) has its own kernel, so no transpose is copied.  ``dense_forward`` adds
  the bias in the kernel's epilogue.
* ``omp_encode``: the matrix part of Batch-OMP - the batch-dictionary correlation ``X @ D.T``,
  ~96% of OMP's FLOPs at the paper's sizes - runs on the device through :meth:`matmul`, with
  ``D`` uploaded once per call (kept resident while the call lasts); the per-iteration O(t l)
  updates stay on the host (NumPy).
* ``gather_matmul``: one work-item per output element, summing the k slots in order with
  floating-point contraction off, i.e. in NumPy's order.

Programs are compiled once per (context, dtype) and cached; one context per device is shared
by every backend instance.

Device choice: the ``device`` option or ``TINYDL_OPENCL_DEVICE`` (a case-insensitive substring
of "platform / device", or "P:D" indices), else the first device that builds *and runs* a tiny
test kernel (two PoCL platforms may be listed and one may fail every build).  Simulators
(Oclgrind) are only used when named.

Dtypes: float32 always; float64 only on devices with ``cl_khr_fp64`` (:attr:`fp64`); without
it, float64 calls run in NumPy.  Mixed or other dtypes also run in NumPy.

Tolerance against NumPy: GEMM sums in another order, so ``|got - ref| <= rtol * (|A| @ |B|)``
elementwise with rtol 1e-5 (float32), 1e-13 (float64); ``gather_matmul`` to the same bound; OMP
indices identical on well-separated data.

Size: ~375 lines (backends aim at ~300): the kernel sources are short strings compiled per
context, and device selection and the fp64 check belong with them.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..backend import BackendError, BackendUnavailable, SparseCodes, check_code_indices
from .numpy import NumpyBackend

__all__ = ["OpenCLBackend", "list_devices", "select_device", "KERNEL_SOURCE"]

RM = 8                          # rows of C per work-item
VW = {"float32": 16, "float64": 8}  # columns of C per work-item (one vector)

KERNEL_SOURCE = r"""
#ifdef USE_FP64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#endif
#define VT_(R, W) R##W
#define VT(R, W) VT_(R, W)
#define VLOAD_(W) vload##W
#define VLOAD(W) VLOAD_(W)
#define VSTORE_(W) vstore##W
#define VSTORE(W) VSTORE_(W)
typedef VT(REAL, VW) realv;

/* C[Mp, Np] = A[Mp, K] @ B[K, Np] (+ bias[Np]); Mp a multiple of RM, Np of VW (the host
   zero-pads).  Each work-item holds an RM x VW block of C in registers: per k, one vector
   load of B, RM broadcasts of A, RM vector multiply-adds.  No local memory, no barrier:
   PoCL's CPU driver runs it as plain vector code (about 14x a one-output-per-item kernel). */
__kernel void gemm(const int K, __global const REAL *A, const int lda,
                   __global const REAL *B, const int ldb, __global REAL *C, const int ldc,
                   __global const REAL *bias, const int has_bias) {
  const int n0 = get_global_id(0) * VW;
  const int m0 = get_global_id(1) * RM;
  realv acc[RM];
  for (int i = 0; i < RM; i++) acc[i] = (realv)0;
  __global const REAL *a = A + (long)m0 * lda;
  for (int k = 0; k < K; k++) {
    const realv b = VLOAD(VW)(0, B + (long)k * ldb + n0);
    for (int i = 0; i < RM; i++) acc[i] = mad((realv)(a[(long)i * lda + k]), b, acc[i]);
  }
  const realv bv = has_bias ? VLOAD(VW)(0, bias + n0) : (realv)0;
  for (int i = 0; i < RM; i++) VSTORE(VW)(acc[i] + bv, 0, C + (long)(m0 + i) * ldc + n0);
}

/* out[i, c] = sum_t values[i, t] * W[idx[i, t], c], slots in order, padding (-1) skipped */
__kernel void gather_matmul(const int n, const int k, const int q,
                            __global const int *idx, __global const REAL *val,
                            __global const REAL *W, const int ldw, __global REAL *out) {
  #pragma OPENCL FP_CONTRACT OFF
  const int c = get_global_id(0), i = get_global_id(1);
  if (c >= q || i >= n) return;
  REAL acc = 0;
  for (int t = 0; t < k; t++) {
    const int j = idx[(long)i * k + t];
    if (j >= 0) acc += val[(long)i * k + t] * W[(long)j * ldw + c];
  }
  out[(long)i * q + c] = acc;
}
"""

_PROBE_SRC = "__kernel void twice(__global float *x) { int i = get_global_id(0); " \
             "x[i] = 2.0f * x[i] + 1.0f; }"
_SIMULATORS = ("oclgrind",)
_SELECTED: Dict[str, Tuple[object, str]] = {}   # spec -> (device or None, reason/label)
_CONTEXTS: Dict[int, Tuple[object, Dict[str, object]]] = {}  # device ptr -> (ctx, programs)


def list_devices() -> List[Tuple[str, object]]:
    """``[("P:D platform / device", device), ...]`` for every OpenCL device listed."""
    import pyopencl as cl
    out = []
    try:
        platforms = cl.get_platforms()
    except cl.Error:  # no ICD at all
        return out
    for p, plat in enumerate(platforms):
        try:
            devices = plat.get_devices()
        except cl.Error:
            continue
        for d, dev in enumerate(devices):
            out.append((f"{p}:{d} {plat.name.strip()} / {dev.name.strip()}", dev))
    return out


def _try_device(dev) -> Optional[str]:
    """Build and run the probe kernel on ``dev``; None if it works, else why not."""
    import pyopencl as cl
    try:
        ctx = cl.Context([dev])
        q = cl.CommandQueue(ctx)
        prg = cl.Program(ctx, _PROBE_SRC).build()
        x = np.arange(4, dtype=np.float32)
        buf = cl.Buffer(ctx, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR, hostbuf=x)
        prg.twice(q, (4,), None, buf)
        cl.enqueue_copy(q, x, buf)
        q.finish()
    except Exception as exc:  # any build or runtime failure disqualifies the device
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
    if not np.array_equal(x, 2 * np.arange(4, dtype=np.float32) + 1):
        return "the probe kernel ran but returned wrong values"
    return None


def select_device(spec: Optional[str] = None):
    """Return ``(device, label)``, or raise :class:`BackendUnavailable` saying why.

    ``spec`` (or ``TINYDL_OPENCL_DEVICE``): "P:D" indices or a case-insensitive substring of
    "platform / device".  Without it, the first non-simulator device that runs a test kernel.
    """
    if spec is None:
        spec = os.environ.get("TINYDL_OPENCL_DEVICE", "").strip() or None
    key = spec or ""
    if key in _SELECTED:
        dev, why = _SELECTED[key]
        if dev is None:
            raise BackendUnavailable(why)
        return dev, why
    try:
        import pyopencl  # noqa: F401
    except ImportError as exc:
        _SELECTED[key] = (None, f"pyopencl is not installed ({exc}); pip install pyopencl")
        raise BackendUnavailable(_SELECTED[key][1]) from None
    devices = list_devices()
    if spec:
        s = spec.lower()
        cands = [(lab, d) for lab, d in devices
                 if lab.split(" ", 1)[0] == spec or s in lab.split(" ", 1)[1].lower()]
    else:
        cands = [(lab, d) for lab, d in devices
                 if not any(sim in lab.lower() for sim in _SIMULATORS)]
    failures = []
    for lab, dev in cands:
        why = _try_device(dev)
        if why is None:
            _SELECTED[key] = (dev, lab)
            return dev, lab
        failures.append(f"{lab}: {why}")
    if not devices:
        why = "no OpenCL platform/device found (install an ICD, e.g. apt-get install " \
              "pocl-opencl-icd)"
    elif not cands:
        why = (f"no OpenCL device matches {spec!r}; listed: "
               + "; ".join(lab for lab, _ in devices)) if spec else \
            "only simulator devices are listed (name one with TINYDL_OPENCL_DEVICE)"
    else:
        why = "no OpenCL device ran the test kernel: " + " | ".join(failures)
    _SELECTED[key] = (None, why)
    raise BackendUnavailable(why)


class OpenCLBackend(NumpyBackend):
    """NumPy backend whose products run as OpenCL kernels (see the module docstring).

    Parameters
    ----------
    device : str, optional
        "P:D" or a substring of "platform / device" (default: ``TINYDL_OPENCL_DEVICE``, else
        the first device that runs a test kernel).
    block, batch : int
        As for :class:`~hal.backends.numpy.NumpyBackend`.

    Attributes
    ----------
    device_label : str
    fp64 : bool
        Whether the device has ``cl_khr_fp64`` (float64 runs on it); otherwise float64 runs
        in NumPy.
    """

    name = "opencl"
    bit_identical = False
    rtol = {"float32": 1e-5, "float64": 1e-13}

    def __init__(self, device: Optional[str] = None, block: int = 64, batch: int = 256,
                 **options) -> None:
        super().__init__(block=block, batch=batch, **options)
        if device is not None:
            self.options["device"] = device
        import pyopencl as cl
        self._cl = cl
        self.device, self.device_label = select_device(device)
        key = int(self.device.int_ptr)
        if key not in _CONTEXTS:
            _CONTEXTS[key] = (cl.Context([self.device]), {})
        self.context, self._programs = _CONTEXTS[key]
        self.queue = cl.CommandQueue(self.context)
        self.fp64 = "cl_khr_fp64" in self.device.extensions
        self._resident: Optional[Dict[tuple, object]] = None
        self._dummy = {}

    @classmethod
    def probe(cls) -> Optional[str]:
        try:
            select_device(None)
        except BackendUnavailable as exc:
            return str(exc)
        return None

    # -- programs and buffers -----------------------------------------------------------
    def _kernel(self, dtype: np.dtype, name: str):
        """Kernel ``name`` for ``dtype``, built once per (context, dtype) and cached."""
        key = np.dtype(dtype).name
        kernels = self._programs.get(key)
        if kernels is None:
            opts = [f"-DRM={RM}", f"-DVW={VW[key]}"]
            opts += ["-DREAL=float"] if key == "float32" else ["-DREAL=double", "-DUSE_FP64"]
            try:
                prg = self._cl.Program(self.context, KERNEL_SOURCE).build(options=opts)
            except self._cl.Error as exc:
                raise BackendError(f"opencl: building the {key} kernels failed on "
                                   f"{self.device_label}: {exc}") from exc
            kernels = {n: self._cl.Kernel(prg, n) for n in ("gemm", "gather_matmul")}
            self._programs[key] = kernels
        return kernels[name]

    def _runs_here(self, *arrays) -> bool:
        dt = arrays[0].dtype
        if any(a.dtype != dt for a in arrays) or dt not in (np.float32, np.float64):
            return False
        return dt == np.float32 or self.fp64

    def _upload(self, arr: np.ndarray, rows: Optional[int] = None, cols: Optional[int] = None):
        """A read-only device buffer holding ``arr`` in C order, zero-padded to ``rows`` x
        ``cols``; reused for the same array while a call keeps buffers resident."""
        cl = self._cl
        key = None
        if self._resident is not None:
            key = (arr.ctypes.data, arr.shape, arr.strides, arr.dtype.str,
                   rows, cols)
            buf = self._resident.get(key)
            if buf is not None:
                return buf
        if arr.ndim == 2 and (rows, cols) != (None, None) and \
                (rows or arr.shape[0], cols or arr.shape[1]) != arr.shape:
            host = np.zeros((rows or arr.shape[0], cols or arr.shape[1]), arr.dtype)
            host[:arr.shape[0], :arr.shape[1]] = arr
        else:
            host = np.ascontiguousarray(arr)
        if host.nbytes == 0:
            host = np.zeros(1, arr.dtype)
        buf = cl.Buffer(self.context, cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR,
                        hostbuf=host)
        if key is not None:
            self._resident[key] = buf
        return buf

    def _gemm(self, a, b, bias, out):
        """``out = a @ b (+ bias)`` on the device; a (M, K), b (K, N) of one float dtype."""
        cl = self._cl
        M, K = a.shape
        N = b.shape[1]
        dt = a.dtype
        if out is None:
            out = np.empty((M, N), dt)
        elif out.shape != (M, N):
            raise ValueError(f"out has shape {out.shape}, expected {(M, N)}")
        if M == 0 or N == 0:
            return out
        vw = VW[dt.name]
        Mp, Np = -(-M // RM) * RM, -(-N // vw) * vw
        a_buf = self._upload(a, Mp, None)
        b_buf = self._upload(b, None, Np)
        c_buf = cl.Buffer(self.context, cl.mem_flags.WRITE_ONLY, Mp * Np * dt.itemsize)
        if bias is not None:
            bias_buf = self._upload(np.ascontiguousarray(bias, dt).reshape(1, N), None, Np)
        else:
            bias_buf = self._dummy.get(dt.str)
            if bias_buf is None:
                bias_buf = self._dummy[dt.str] = self._upload(np.zeros(1, dt))
        self._kernel(dt, "gemm")(self.queue, (Np // vw, Mp // RM), None, np.int32(K), a_buf,
                                 np.int32(K), b_buf, np.int32(Np), c_buf, np.int32(Np),
                                 bias_buf, np.int32(bias is not None))
        direct = Mp == M and Np == N and out.flags.c_contiguous
        target = out if direct else np.empty((Mp, Np), dt)
        cl.enqueue_copy(self.queue, target, c_buf)
        self.queue.finish()
        if not direct:
            out[...] = target[:M, :N]
        return out

    # -- the contract -------------------------------------------------------------------
    def matmul(self, a, b, out=None):
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0] or \
                not self._runs_here(a, b) or (out is not None and out.dtype != a.dtype):
            return np.matmul(a, b, out=out)
        return self._gemm(a, b, None, out)

    def correlate(self, X, D, out=None):
        if X.ndim != 2 or D.ndim != 2 or X.shape[1] != D.shape[1] or \
                not self._runs_here(X, D) or (out is not None and out.dtype != X.dtype):
            return np.matmul(X, D.T, out=out)
        return self._gemm(X, D.T, None, out)

    def dense_forward(self, X, W, b=None, out=None):
        if X.ndim != 2 or W.ndim != 2 or X.shape[1] != W.shape[0] or \
                not self._runs_here(X, W) or (out is not None and out.dtype != X.dtype) or \
                (b is not None and np.shape(b) != (W.shape[1],)):
            return super().dense_forward(X, W, b, out=out)
        return self._gemm(X, W, b, out)

    def omp_encode(self, X, D, G, k, tol=None, ws=None) -> SparseCodes:
        # D (and anything else multiplied repeatedly) stays on the device for this call only:
        # the caller may change its arrays in place between calls
        self._resident = {}
        try:
            return super().omp_encode(X, D, G, k, tol=tol, ws=ws)
        finally:
            self._resident = None

    def gather_matmul(self, indices, values, W, out=None):
        cl = self._cl
        if indices.ndim != 2 or values.shape != indices.shape or W.ndim != 2 or \
                not self._runs_here(values, W) or (out is not None and out.dtype != W.dtype):
            return super().gather_matmul(indices, values, W, out=out)
        n, k = indices.shape
        q = W.shape[1]
        check_code_indices(indices, W.shape[0])
        if out is None:
            out = np.empty((n, q), W.dtype)
        elif out.shape != (n, q):
            raise ValueError(f"out has shape {out.shape}, expected {(n, q)}")
        if n == 0 or q == 0:
            return out
        kern = self._kernel(W.dtype, "gather_matmul")
        idx_buf = self._upload(np.ascontiguousarray(indices, np.int32) if k else
                               np.zeros(1, np.int32))
        val_buf = self._upload(values if k else np.zeros(1, W.dtype))
        w_buf = self._upload(W)
        o_buf = cl.Buffer(self.context, cl.mem_flags.WRITE_ONLY, n * q * W.itemsize)
        lx = 16
        gsize = (-(-q // lx) * lx, n)
        kern(self.queue, gsize, (lx, 1), np.int32(n), np.int32(k), np.int32(q),
             idx_buf, val_buf, w_buf, np.int32(q), o_buf)
        target = out if out.flags.c_contiguous else np.empty((n, q), W.dtype)
        cl.enqueue_copy(self.queue, target, o_buf)
        self.queue.finish()
        if target is not out:
            out[...] = target
        return out
