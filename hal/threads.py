"""BLAS thread control: the thread count of NumPy's bundled OpenBLAS and of the blas backend's.

On a shared two-core machine two BLAS threads are often slower than one (and multi-threaded
BLAS partitions work by size, which changes rounding), so the thread count is a setting, not a
hard-coded choice.  The libraries are reached through cffi in ABI mode (no compiler needed);
where a library or cffi is missing every call degrades to a no-op and :func:`blas_info` says
why.

Functions
---------
get_num_threads() -> int or None
    NumPy's OpenBLAS thread count (None if it cannot be read).
set_num_threads(n) -> int or None
    Set it for NumPy's OpenBLAS and the blas backend's library; returns the previous count.
blas_threads(n)
    Context manager doing the same for a block of code.
blas_info() -> dict
    For each library: path, whether it is controlled, and why not.
"""
from __future__ import annotations

import contextlib
import glob
import os
from typing import Dict, List, Optional, Tuple

__all__ = ["get_num_threads", "set_num_threads", "blas_threads", "blas_info"]

#: the count last asked for with :func:`set_num_threads` (None: never asked); a blas backend
#: library loaded later takes it too (see :func:`default_backend_threads`)
_REQUESTED: Optional[int] = None

# name -> (ffi lib or None, path or None, reason when None, (getter, setter) symbol names)
_LIBS: Dict[str, Tuple[object, Optional[str], str, Tuple[str, str]]] = {}


def _numpy_openblas_path() -> Optional[str]:
    import numpy
    base = os.path.dirname(os.path.dirname(os.path.abspath(numpy.__file__)))
    for pattern in ("numpy.libs/libscipy_openblas64_*.so*", "numpy.libs/libscipy_openblas*.so*",
                    "numpy/.dylibs/libscipy_openblas*.dylib"):
        hits = sorted(glob.glob(os.path.join(base, pattern)))
        if hits:
            return hits[0]
    return None


def _open(name: str, path: Optional[str], symbols: List[Tuple[str, str]]):
    """dlopen ``path`` with cffi and find a (getter, setter) pair among ``symbols``."""
    if name in _LIBS:
        return _LIBS[name]
    entry: Tuple[object, Optional[str], str, Tuple[str, str]]
    if path is None:
        entry = (None, None, "library not found", ("", ""))
    else:
        try:
            import cffi
        except ImportError:
            entry = (None, path, "cffi is not installed", ("", ""))
        else:
            ffi = cffi.FFI()
            try:
                lib = ffi.dlopen(path)
            except OSError as exc:
                entry = (None, path, f"cannot load: {exc}", ("", ""))
            else:
                entry = (None, path, f"no thread-control symbol among {symbols}", ("", ""))
                for get, put in symbols:
                    try:
                        ffi.cdef(f"int {get}(void); void {put}(int);", override=True)
                        getattr(lib, get)
                        getattr(lib, put)
                    except (AttributeError, cffi.CDefError):
                        continue
                    entry = (lib, path, "ok", (get, put))
                    break
    _LIBS[name] = entry
    return entry


def _numpy_lib():
    return _open("numpy", _numpy_openblas_path(),
                 [("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                  ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
                  ("openblas_get_num_threads", "openblas_set_num_threads")])


def _blas_backend_lib():
    """The blas backend's library, only if that backend already loaded it (no import here)."""
    import sys
    mod = sys.modules.get("hal.backends.blas")
    path = getattr(mod, "_LOADED_PATH", None) if mod is not None else None
    if path is None:
        return None
    return _open("blas", path, [("scipy_openblas_get_num_threads",
                                 "scipy_openblas_set_num_threads"),
                                ("openblas_get_num_threads", "openblas_set_num_threads")])


def get_num_threads() -> Optional[int]:
    """NumPy's OpenBLAS thread count, or None if it cannot be read (see :func:`blas_info`)."""
    lib, _, _, (get, _) = _numpy_lib()
    return None if lib is None else int(getattr(lib, get)())


def set_num_threads(n: int) -> Optional[int]:
    """Set the BLAS thread count of NumPy's OpenBLAS and of the blas backend's library.

    Parameters
    ----------
    n : int
        Threads, ``n >= 1``.

    Returns
    -------
    int or None
        NumPy's previous count (None where it cannot be controlled: then this is a no-op).
    """
    global _REQUESTED
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"BLAS thread count must be an integer >= 1, got {n!r}")
    _REQUESTED = int(n)
    prev = get_num_threads()
    for entry in (_numpy_lib(), _blas_backend_lib()):
        if entry is not None and entry[0] is not None:
            getattr(entry[0], entry[3][1])(int(n))
    return prev


def default_backend_threads() -> Optional[int]:
    """Threads the blas backend's library gets when it is loaded.

    The count last given to :func:`set_num_threads`; else None when ``OPENBLAS_NUM_THREADS``
    is set (the library reads it itself); else 1.  One, not the library's own default of one
    thread per core: on a shared two-core machine OpenBLAS's spinning worker threads made a
    520-256-128-13 network's training 60x slower than one thread (2.6 s against 0.041 s per
    2,048-sample epoch, batch 32, measured with numpy's own OpenBLAS at 0.04 s).

    Returns
    -------
    int or None
    """
    if _REQUESTED is not None:
        return _REQUESTED
    if os.environ.get("OPENBLAS_NUM_THREADS", "").strip():
        return None
    return 1


@contextlib.contextmanager
def blas_threads(n: int):
    """Run a block with ``n`` BLAS threads, then restore the previous count."""
    prev = set_num_threads(n)
    try:
        yield prev
    finally:
        if prev is not None:
            set_num_threads(prev)


def blas_info() -> Dict[str, Dict[str, object]]:
    """For each BLAS library: ``{"path", "controlled", "reason", "threads"}``."""
    out = {}
    entries = {"numpy": _numpy_lib(), "blas": _blas_backend_lib()}
    for name, entry in entries.items():
        if entry is None:
            out[name] = {"path": None, "controlled": False,
                         "reason": "blas backend not loaded", "threads": None}
            continue
        lib, path, reason, (get, _) = entry
        out[name] = {"path": path, "controlled": lib is not None, "reason": reason,
                     "threads": int(getattr(lib, get)()) if lib is not None else None}
    return out
