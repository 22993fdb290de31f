"""Which kernels run the execution phase: the one rule.

The execution phase - a fitted transform's encode (``transform``, ``transform_into``) and a
learner's one-sample predict - codes every row on its own, in a fixed order: its results
do not depend on how rows are batched, how a stream was split or where a fit resumed.  The
training phase (Algorithm 2's stream, the network's updates) is where a backend's choice
matters for those properties (see :data:`hal.DEFAULT_ORDER`).  So:

* a backend that sets ``compiled_execution = True`` (``blas``, ``mpi``,
  ``multiprocessing``: NumPy-family backends whose per-row OMP is NumPy's per-iteration
  loop, ~100x a dictionary pass for one sample) runs its execution phase on the native
  backend's per-row kernels (``hal/backends/native``: ``correlate.c``'s encode,
  ``predict.c``'s fused predict) whenever they build here, and on its own plan otherwise
  (no C compiler or no cffi: nothing else changes);
* ``numpy`` (the reference) and the backends with execution kernels of their own
  (``native``, ``opencl``) keep theirs;
* ``TINYDL_EXECUTION=backend`` turns the rule off (the training backend's own plan runs).

Results.  The codes of the execution phase are then the native kernel's: the same bits
whichever of those backends trained the model (given the same dictionary), on any batch
split; against the backend's own plan (NumPy's Batch-OMP) they agree to the native
backend's stated tolerance (the same supports wherever the argmax is not a near tie,
coefficients within 1e-4 (float32) / 1e-10 (float64) of the largest).  What training
produces - the dictionary, the codes a stream returns, the network - is untouched by this
rule, so its bit-identity across splits, ranks and resumed fits is the training backend's.
"""
from __future__ import annotations

import os
from typing import Optional

__all__ = ["execution_backend", "execution_kernels", "native_kernels"]

_NATIVE: list = []  # [NativeBackend or None], filled on first use


def native_kernels():
    """The process's native backend for execution kernels, or None where it cannot run
    (tried once per process: a failed build is not retried on every call)."""
    if not _NATIVE:
        be = None
        try:
            from .backend import BackendError
            from .backends.native import NativeBackend
            if NativeBackend.probe() is None:
                be = NativeBackend()
        except (ImportError, BackendError, OSError):
            be = None
        _NATIVE.append(be)
    return _NATIVE[0]


def execution_backend(backend):
    """The backend whose kernels run ``backend``'s execution phase (see the module
    docstring): the native backend for a ``compiled_execution`` backend where it builds
    and ``TINYDL_EXECUTION`` is not ``"backend"``, else ``backend`` itself."""
    if not getattr(backend, "compiled_execution", False):
        return backend
    if os.environ.get("TINYDL_EXECUTION", "").strip().lower() == "backend":
        return backend
    native: Optional[object] = native_kernels()
    return backend if native is None else native


def execution_kernels(name: str) -> str:
    """The name of the backend whose kernels run the execution phase of the backend named
    ``name`` (the rule of :func:`execution_backend`, without building ``name``: what
    :mod:`hal.cost` prices the execution phase on)."""
    from . import _load_class
    from .backend import BackendUnavailable
    try:
        cls = _load_class(name)
    except BackendUnavailable:
        return name
    if not getattr(cls, "compiled_execution", False) \
            or os.environ.get("TINYDL_EXECUTION", "").strip().lower() == "backend":
        return name
    return name if native_kernels() is None else "native"
