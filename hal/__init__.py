"""tinydl's hardware abstraction layer.

A registry of backends (imported lazily, so ``import hal`` pulls in no optional dependency),
device profiles, and cost and power models.  The algorithm core never names a device: it asks
:func:`get_backend` and calls the :class:`~hal.backend.Backend` contract.

Selection (:func:`select_backend`, the one rule; :func:`get_backend` and
:func:`hal.cost.choose_backend` both follow it): the explicit ``name`` argument, then the
``TINYDL_BACKEND`` environment variable, then the profile's preference list (the first backend
that can run here), then the fastest backend that runs here (by the profile's figures, else
:data:`DEFAULT_ORDER`).
"""
from __future__ import annotations

import importlib
import os
from typing import Dict, List, Optional, Sequence, Tuple

from .backend import Backend, BackendError, BackendUnavailable, OMPWorkspace
from .codes import SparseCodes

__all__ = ["Backend", "BackendError", "BackendUnavailable", "SparseCodes", "OMPWorkspace",
           "BACKENDS", "register_backend", "get_backend", "available_backends",
           "select_backend", "DEFAULT_ORDER"]

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


#: the fallback order when no profile ranks the backends: the fastest first among those
#: whose results do not depend on how a stream is split or where a fit resumed (OpenBLAS
#: through cffi, then the reference).  ``native`` is faster still but is left out of the
#: default: its k-sparse and basis kernels round by batch (measured: a two-rank MPI fit's
#: dictionary differed from one process's in the last bit, and a resumed fit's optimizer
#: state from an uninterrupted one's), so it runs when asked for (argument,
#: ``TINYDL_BACKEND``) or listed in a profile's preferences.  Coding rows by OMP (the
#: execution phase, the stream's codes of rows that do not join: per row, split-independent)
#: runs on native's per-row encode kernel anyway where it builds: see :mod:`hal.execution`
DEFAULT_ORDER: Tuple[str, ...] = ("blas", "numpy")


def _fastest_first(profile) -> List[str]:
    """The backends ``profile`` has figures for (never ``null``), fastest first by measured
    float32 matrix-product throughput at the large size class."""
    from .profile import SIZE_CLASS_FLOPS
    big = SIZE_CLASS_FLOPS["large"]
    specs = [s for s in profile.backends if s.name != "null"]
    return [s.name for s in sorted(specs, key=lambda s: -s.throughput("matmul", "float32",
                                                                        big))]


def select_backend(name: Optional[str] = None, preferences: Sequence[str] = (), *,
                   profile=None) -> Tuple[str, List[Tuple[str, str]]]:
    """Decide which backend runs, without building it: the one rule of tinydl.

    The rule, in order:

    1. ``name``, the explicit argument (it must be able to run here);
    2. the ``TINYDL_BACKEND`` environment variable (likewise);
    3. the first entry of ``preferences`` that can run here (``profile``'s
       ``backend_preference`` when ``preferences`` is empty and a profile is given);
    4. the fastest backend that can run here: with a profile, the backends it has figures
       for ordered by their measured float32 matrix-product throughput (large size class);
       then :data:`DEFAULT_ORDER` (``blas > numpy``: the fastest whose results do not
       depend on the split of a stream; ``native`` only when asked for or preferred).
       ``numpy`` always runs, so the rule always decides.

    Parameters
    ----------
    name : str, optional
        A registered backend name.
    preferences : sequence of str
        A preference list (a profile's), tried in order.
    profile : hal.profile.DeviceProfile, optional
        Supplies the preferences (when none are given) and the figures that rank step 4.

    Returns
    -------
    chosen : str
        The backend's name.
    decisions : list of (str, str)
        Each backend considered, in order, with why it was chosen or skipped.

    Raises
    ------
    BackendUnavailable
        If ``name`` or ``TINYDL_BACKEND`` names a backend that cannot run here.
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
    if not preferences and profile is not None:
        preferences = profile.backend_preference
    seen = set()
    for pref in preferences:
        seen.add(pref)
        why = _probe(pref)
        if why is None:
            decisions.append((pref, "chosen: first runnable entry of the preferences"))
            return pref, decisions
        decisions.append((pref, f"skipped: {why}"))
    ranked = _fastest_first(profile) if profile is not None else []
    for how, order in (("the fastest by the profile's figures", ranked),
                       ("the fastest by the default order blas > numpy",
                        DEFAULT_ORDER)):
        for cand in order:
            if cand in seen:
                continue
            seen.add(cand)
            why = _probe(cand)
            if why is None:
                decisions.append((cand, f"chosen: {how} that runs here"))
                return cand, decisions
            decisions.append((cand, f"skipped: {why}"))
    raise BackendUnavailable(f"no backend can run here: {decisions}")  # pragma: no cover


def get_backend(name: Optional[str] = None, preferences: Sequence[str] = (), *,
                profile=None, **options) -> Backend:
    """Build a backend.

    Parameters
    ----------
    name : str, optional
        A registered backend name, or an existing :class:`Backend` (returned as is).
    preferences : sequence of str
        A profile's preference list, tried in order when neither ``name`` nor
        ``TINYDL_BACKEND`` decides.
    profile : hal.profile.DeviceProfile, optional
        See :func:`select_backend`.
    **options
        Passed to the backend's constructor (``block=``, ``workers=``, ``device=``...).

    Raises
    ------
    BackendUnavailable
        If the backend asked for cannot run here (the message says why).
    """
    if isinstance(name, Backend):
        return name
    chosen, _ = select_backend(name, preferences, profile=profile)
    return _load_class(chosen)(**options)
