"""tinydl's hardware abstraction layer.

A registry of backends (imported lazily, so ``import hal`` pulls in no optional dependency),
device profiles, and cost and power models.  The algorithm core never names a device: it asks
:func:`get_backend` and calls the :class:`~hal.backend.Backend` contract.

Selection order for :func:`get_backend`: the explicit ``name`` argument, then the
``TINYDL_BACKEND`` environment variable, then the profile's preference list (the first backend
that can run here), then ``numpy``.
"""
from __future__ import annotations

import importlib
import os
from typing import Dict, List, Optional, Sequence, Tuple

from .backend import (Backend, BackendError, BackendUnavailable, OMPResult,  # noqa: F401
                      OMPWorkspace)

__all__ = ["Backend", "BackendError", "BackendUnavailable", "OMPResult", "OMPWorkspace",
           "BACKENDS", "register_backend", "get_backend", "available_backends",
           "select_backend"]

#: name -> "module:Class"; modules are imported only when the backend is asked for.
BACKENDS: Dict[str, str] = {
    "numpy": "hal.backends.numpy:NumpyBackend",
    "blas": "hal.backends.blas:BlasBackend",
    "native": "hal.backends.native:NativeBackend",
    "opencl": "hal.backends.opencl:OpenCLBackend",
    "multiprocessing": "hal.backends.multiprocessing:MultiprocessingBackend",
    "mpi": "hal.backends.mpi:MPIBackend",
    "null": "hal.backends.null:NullBackend",
}


def register_backend(name: str, target: str) -> None:
    """Register ``target`` ("module:Class") under ``name``.  Registering a name twice is an
    error (as in TFLite Micro's op resolver): silently replacing a kernel hides bugs."""
    if name in BACKENDS and BACKENDS[name] != target:
        raise ValueError(f"backend {name!r} is already registered as {BACKENDS[name]!r}")
    BACKENDS[name] = target


def _load_class(name: str):
    if name not in BACKENDS:
        raise BackendUnavailable(
            f"unknown backend {name!r}; registered backends: {', '.join(sorted(BACKENDS))}")
    module, _, cls = BACKENDS[name].partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:  # the module itself or its optional dependency is missing
        raise BackendUnavailable(f"backend {name!r} cannot be imported: {exc}") from exc
    return getattr(mod, cls)


def _probe(name: str) -> Optional[str]:
    try:
        cls = _load_class(name)
    except BackendUnavailable as exc:
        return str(exc)
    try:
        return cls.probe()
    except Exception as exc:  # a probe must not take the registry down with it
        return f"probe failed: {type(exc).__name__}: {exc}"


def available_backends() -> Dict[str, Tuple[bool, str]]:
    """For each registered backend: ``(can_run_here, reason)``.

    ``reason`` is ``"ok"`` for a backend that can run, otherwise why it cannot.
    """
    out = {}
    for name in BACKENDS:
        why = _probe(name)
        out[name] = (why is None, "ok" if why is None else why)
    return out


def select_backend(name: Optional[str] = None,
                   preferences: Sequence[str] = ()) -> Tuple[str, List[Tuple[str, str]]]:
    """Decide which backend :func:`get_backend` would use, without building it.

    Returns
    -------
    chosen : str
        The backend's name.
    decisions : list of (str, str)
        Each backend considered, in order, with why it was chosen or skipped.
    """
    decisions: List[Tuple[str, str]] = []
    if name:
        why = _probe(name)
        if why is not None:
            raise BackendUnavailable(f"backend {name!r} was asked for but cannot run: {why}")
        return name, [(name, "chosen: asked for explicitly")]
    env = os.environ.get("TINYDL_BACKEND", "").strip()
    if env:
        why = _probe(env)
        if why is not None:
            raise BackendUnavailable(
                f"TINYDL_BACKEND={env!r} names a backend that cannot run: {why}")
        return env, [(env, "chosen: TINYDL_BACKEND")]
    for pref in preferences:
        why = _probe(pref)
        if why is None:
            decisions.append((pref, "chosen: first runnable entry of the profile's preferences"))
            return pref, decisions
        decisions.append((pref, f"skipped: {why}"))
    decisions.append(("numpy", "chosen: the default (the reference backend)"))
    return "numpy", decisions


def get_backend(name: Optional[str] = None, preferences: Sequence[str] = (),
                **options) -> Backend:
    """Build a backend.

    Parameters
    ----------
    name : str, optional
        A registered backend name, or an existing :class:`Backend` (returned as is).
    preferences : sequence of str
        A profile's preference list, tried in order when neither ``name`` nor
        ``TINYDL_BACKEND`` decides.
    **options
        Passed to the backend's constructor (``block=``, ``workers=``, ``device=``...).

    Raises
    ------
    BackendUnavailable
        If the backend asked for cannot run here (the message says why).
    """
    if isinstance(name, Backend):
        return name
    chosen, _ = select_backend(name, preferences)
    return _load_class(chosen)(**options)
