"""Which kernels code the rows: the one rule.

Coding a row by OMP over a given dictionary depends on nothing but the row and the
dictionary.  The execution phase - a fitted transform's encode (``transform``,
``transform_into``) and a learner's one-sample predict - and the streaming transform's codes
of the rows that do not join (``hal.backends.numpy.basis.BasisWorkspace.code_plan``) are such
codings; the Wp test and the joins (the dictionary itself) and the network's updates are not,
and stay on the training backend (see :data:`hal.DEFAULT_ORDER`).  So:

* a backend that sets ``compiled_execution = True`` (``blas``, ``mpi``,
  ``multiprocessing``: NumPy-family backends whose per-row OMP is NumPy's per-iteration
  loop, ~100x a dictionary pass for one sample) codes rows on the native backend's per-row
  kernels (``hal/backends/native``: ``correlate.c``'s encode, ``predict.c``'s fused predict)
  whenever they build here, and on its own plan otherwise (no C compiler or no cffi:
  nothing else changes);
* ``numpy`` (the reference) and the backends with kernels of their own (``native``,
  ``opencl``) keep theirs;
* ``TINYDL_EXECUTION=backend`` turns the rule off (the training backend's own plan runs).

Results.  The codes are then the native kernel's: each row's depend only on the row and the
dictionary at its time (a fixed order of its own), so a stream's dictionary and codes stay
the same bits for any batch split, N MPI ranks against one process and a resumed fit, and
the stream's codes once the dictionary is full are the same bits as ``transform``'s and as
the native backend's own encode.  The dictionary, Gram matrix and ``Li`` are the same bits
with the rule on and off (the Wp test and the joins do not use it); the codes agree with the
backend's own plan (NumPy's Batch-OMP) to the native backend's stated tolerance (the same
supports wherever the argmax is not a near tie, coefficients within 1e-4 (float32) / 1e-10
(float64) of the largest).  :func:`execution_kernels` names the kernels for the cost model.
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


def _rule_applies(backend) -> bool:
    """Whether the rule sends ``backend``'s (an instance's or a class's) execution phase to
    the native kernels, before asking whether they build here."""
    return bool(getattr(backend, "compiled_execution", False)) \
        and os.environ.get("TINYDL_EXECUTION", "").strip().lower() != "backend"


def execution_backend(backend):
    """The backend whose kernels run ``backend``'s execution phase (see the module
    docstring): the native backend for a ``compiled_execution`` backend where it builds
    and ``TINYDL_EXECUTION`` is not ``"backend"``, else ``backend`` itself."""
    if not _rule_applies(backend):
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
    return "native" if _rule_applies(cls) and native_kernels() is not None else name
