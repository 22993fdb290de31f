"""Building and loading the native kernels: the compiler, the cache, cffi in ABI mode.

The C sources sit beside this file (``kernels.c`` includes ``omp.c``, ``sparse.c`` and
``basis.c`` once per float type; ``kernels.h`` holds the prototypes, which are also what cffi
is told: its ``cdef`` is read from that header, never copied).  They are compiled on first use
with the system C compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``) into a shared library
that cffi loads in ABI mode: no Python headers are needed, only a compiler.  The library is
cached under ``$TINYDL_CACHE`` (default ``~/.cache/tinydl``), keyed by a hash of every source
file, the flags, the compiler, the machine and the CPU, and written atomically (temporary
name, then rename), so concurrent first uses are safe.  ``-march=native`` is tried first,
then portable flags.
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
from typing import List, Optional

from ...backend import BackendUnavailable

__all__ = ["build_library", "load", "load_error", "SOURCES", "HEADER", "cdef"]

#: the folder of the C files
HERE = os.path.dirname(os.path.abspath(__file__))
#: the translation unit compiled, and every file it includes (all of them key the cache)
SOURCES = ("kernels.c", "omp.c", "sparse.c", "basis.c", "correlate.c", "stream.c", "predict.c",
           "stored.c")
HEADER = "kernels.h"

# -O3 vectorizes the inner loops; no -ffast-math: the kernels must keep IEEE semantics
# (NaN comparisons in the stopping rules, no reassociation of the reductions)
_FLAG_SETS = (["-O3", "-march=native", "-fPIC", "-shared"], ["-O2", "-fPIC", "-shared"])

_LOCK = threading.Lock()
_LIB = None     # (ffi, lib, path)
_ERROR: Optional[str] = None


def _read(name: str) -> str:
    path = os.path.join(HERE, name)
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise BackendUnavailable(f"backend 'native': its source {path} is missing ({exc}); "
                                 "the package was installed without its C files") from None


def cdef() -> str:
    """The prototypes of ``kernels.h`` as cffi's ``cdef`` takes them (preprocessor lines
    dropped; comments are cffi's to skip)."""
    return "\n".join(line for line in _read(HEADER).splitlines()
                     if not line.lstrip().startswith("#"))


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

    Parameters
    ----------
    force : bool
        Rebuild even when the cache holds a library for these sources and flags.

    Returns
    -------
    str
        The path of the shared library.

    Raises
    ------
    BackendUnavailable
        No C compiler, a missing source file, or every flag set failed (the compiler's last
        message is included).
    """
    cc = _compiler()
    text = "\0".join(_read(name) for name in SOURCES + (HEADER,))
    errors: List[str] = []
    for flags in _FLAG_SETS:
        key = hashlib.sha256("\0".join([text, " ".join(flags), str(cc), platform.machine(),
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
            out = os.path.join(tmp, "kernels.so")
            cmd = cc.split() + flags + ["-I", HERE, "-o", out,
                                        os.path.join(HERE, SOURCES[0]), "-lm"]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                                      check=False)
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


def load():
    """``(ffi, lib, path)`` of the built kernels, or None (then :func:`load_error` says
    why).  Built and loaded once per process."""
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
            ffi.cdef(cdef())
            lib = ffi.dlopen(path)
        except BackendUnavailable as exc:
            _ERROR = str(exc)
            return None
        except OSError as exc:
            _ERROR = f"backend 'native': cannot load its kernels: {exc}"
            return None
        _LIB = (ffi, lib, path)
        return _LIB


def load_error() -> Optional[str]:
    """Why :func:`load` returned None (None before a failed load)."""
    return _ERROR
