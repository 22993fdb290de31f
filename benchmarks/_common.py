"""Small helpers shared by the benchmarks: one BLAS thread, timing, tables, JSON.

Import this module *before* NumPy (it sets the BLAS thread variables, which OpenBLAS reads
once at load time)::

    sys.path.insert(0, repo_root)
    from benchmarks._common import time_call, print_table, write_json
"""
from __future__ import annotations

import os
import sys

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Callable, List, Optional, Sequence  # noqa: E402

__all__ = ["REPO_ROOT", "SHARED_DATA", "SHARED_FILES", "shared_file", "blas_threads",
           "time_call", "print_table", "write_json", "fmt"]


#: the workplace's shared data folder beside the checkout, and its two data sets by name
SHARED_DATA = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data"))
SHARED_FILES = {"ujiindoorloc": "ujiindoorloc.npz", "dsa": "dsa_subset20_f16.npz"}


def shared_file(name: str) -> Optional[str]:
    """The path of the shared data set ``name`` (a key of :data:`SHARED_FILES`), or None after
    saying it is absent (a benchmark then skips that data set, loudly)."""
    path = os.path.join(SHARED_DATA, SHARED_FILES[name])
    if not os.path.exists(path):
        print(f"{name}: {path} is absent: skipped")
        return None
    return path


def blas_threads() -> str:
    """The BLAS thread setting in force, for the report header."""
    return os.environ.get("OPENBLAS_NUM_THREADS", "unset")


def time_call(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` runs after ``warmup`` runs.

    The median (not the minimum) because the machines these run on are shared: it is what a
    user sees, and one lucky run does not move it.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fmt(value: Optional[float], digits: int = 1) -> str:
    """A number for a table cell; ``-`` for None."""
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
                file=None) -> None:
    """Print a plain-text table with right-aligned columns (the first left-aligned)."""
    file = file or sys.stdout
    cells: List[List[str]] = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths)))

    print(line(cells[0]), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for r in cells[1:]:
        print(line(r), file=file)


def write_json(path: str, obj) -> None:
    """Write ``obj`` as indented JSON, atomically (tinydl.io), so a crash leaves no torn file."""
    from tinydl.io import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
