"""The backend a small-memory plan runs on: the OMP workspace sized to the plan's chunk, and
without the contiguous copy of ``D.T`` when the plan says so.

:meth:`hal.backends.numpy.NumpyBackend.prepare_omp` keeps, for a float32 dictionary, a
contiguous copy of ``D.T`` (``m x l`` values: a second dictionary-sized array; measured ~1.3x
faster float32 GEMMs on OpenBLAS).  Its ``omp_encode`` falls back to the strided view ``D.T``
when the workspace has none, with the same results up to the product's rounding.  A plan whose
footprint does not fit with the copy (:func:`tinydl.customize.plan`) asks for
:func:`plan_backend` with ``dt_copy=False``: the same backend class, whose workspaces drop it.
"""
from __future__ import annotations

import functools

__all__ = ["plan_backend", "sized_by_plan", "lends_omp_scratch", "DECODE_ROWS", "DECODE_LADDER",
           "PRODUCT_ROWS", "PRODUCT_LADDER", "PACKED_BACKENDS"]

#: atoms a stored (float16 / int8) dictionary decodes at a time by default
#: (hal.backends.numpy.stored._TILE), and the customizer's options: 16, then 1 when the
#: (16, m) float32 tile does not fit (at m=5625 it is 360 KB: 64 int8 atoms)
DECODE_ROWS = 16
DECODE_LADDER = (16, 1)
#: rows of the backend's product tiles by default (hal.backends.numpy.PRODUCT_ROWS), and the
#: customizer's options: 16, then 4, then 1 when the (16, m + l) tiles, the Wp test's
#: (16, l) correlations and OMP's (l, 16) output tile do not fit (at m=520, l=100: 57 KB
#: against 14 KB at 4 rows; at m=5625, l=80: 365 KB, 91 KB, 23 KB).  Each row's products
#: stay independent of its neighbours at 4 and 1 rows too (the property the 16-row tiles
#: were chosen for, checked in tests/core/test_small_memory.py), so the codes still do not
#: depend on how the stream is cut; fewer rows are slower (more, smaller products)
PRODUCT_ROWS = 16
PRODUCT_LADDER = (16, 4, 1)
#: the backends whose workspaces can pack G and Li (NumPy's Batch-OMP reads a packed G;
#: an OMP kernel of its own, native's, takes plain arrays)
PACKED_BACKENDS = ("numpy", "blas")


@functools.lru_cache(maxsize=None)
def _lean_class(cls):
    """``cls`` whose OMP workspaces hold no copy of ``D.T`` (same name, same results up to
    the product's rounding)."""

    def prepare_omp(self, batch, m, l, k, dtype, dt_copy=None):
        ws = cls.prepare_omp(self, batch, m, l, k, dtype, dt_copy=False)
        ws.arrays.pop("DT", None)  # omp_encode then multiplies by the view D.T
        return ws

    return type(f"Lean{cls.__name__}", (cls,), {"prepare_omp": prepare_omp,
                                               "omp_dt_copy": False,
                                               "__module__": __name__})


def sized_by_plan(batch: int = 256, dt_copy: bool = True, decode_rows: int = DECODE_ROWS,
                  product_rows: int = PRODUCT_ROWS, packed_gram: bool = False) -> bool:
    """Whether :func:`plan_backend` makes a backend of its own for these settings (one that
    codes the stream on its own Batch-OMP, ``compiled_execution`` off), not the name itself
    (the defaults)."""
    return not (batch >= 256 and dt_copy and decode_rows == DECODE_ROWS
                and product_rows == PRODUCT_ROWS and not packed_gram)


def lends_omp_scratch(name: str, **settings) -> bool:
    """Whether a learner on :func:`plan_backend`'s backend for ``name`` and ``settings``
    (its arguments) codes the stream on NumPy's Batch-OMP, whose workspace lends its scratch
    to the weight average's stash (:meth:`hal.backend.OMPWorkspace.scratch`): the NumPy
    backend, or the BLAS one sized by a plan.  Elsewhere (the execution rule's native
    kernels) the footprint prices the whole stash."""
    return str(name) == "numpy" or (str(name) in PACKED_BACKENDS and sized_by_plan(**settings))


def plan_backend(name: str, batch: int = 256, dt_copy: bool = True,
                 decode_rows: int = DECODE_ROWS, product_rows: int = PRODUCT_ROWS,
                 packed_gram: bool = False):
    """The backend ``name`` with OMP workspaces for ``batch`` rows (and, with
    ``dt_copy=False``, without the copy of ``D.T``; with ``decode_rows`` below 16, a stored
    float16 / int8 dictionary decoded that many atoms at a time).

    Parameters
    ----------
    name : str
        A registered backend (``hal.get_backend``).
    batch : int
    dt_copy : bool
    decode_rows : int
        Atoms a stored dictionary decodes at a time into its float32 tile
        (:mod:`hal.backends.numpy.stored`: ``decode_rows x m`` values; 16 by default).
    product_rows : int
        Rows of the backend's row-independent product tiles (NumPy and BLAS backends; 16
        by default): also the Wp test's block (:mod:`hal.backends.numpy.basis`).
    packed_gram : bool
        A stored dictionary keeps its inverse Cholesky factor below its Gram matrix's
        diagonal while it fills and drops it when full (:mod:`hal.backends.numpy.packed`;
        read by :class:`tinydl.transform.StreamingDictionary` from the backend).

    Returns
    -------
    hal.Backend or str
        ``name`` itself when the defaults apply or the backend takes no ``batch`` option;
        a backend sized here has ``compiled_execution`` off (see :mod:`hal.execution`).
    """
    import hal
    if not sized_by_plan(batch, dt_copy, decode_rows, product_rows, packed_gram):
        return name
    try:
        be = hal.get_backend(name, batch=int(batch))
    except TypeError:  # a backend without a batch option (native, opencl...)
        return name
    if not dt_copy and str(name) in ("numpy", "blas"):  # the backends that keep the copy
        be.__class__ = _lean_class(type(be))
    if decode_rows != DECODE_ROWS:
        be.stored_tile_rows = int(decode_rows)  # read by the stored-atom tiles
    if product_rows != PRODUCT_ROWS and hasattr(be, "product_tiles"):
        be.product_rows = int(product_rows)  # read by rows_matmul, OMP and the Wp test
    if packed_gram and str(name) in PACKED_BACKENDS:
        be.packed_gram = True
    # the plan priced this backend's own OMP workspaces, sized above; the execution rule's
    # native kernels (hal.execution) keep a transposed copy of the atoms and 48-row scratch
    # of their own (measured at m=5625, l=100: +3.3 MB, a peak 1.57x the plan's), so a
    # backend sized by a plan codes its rows on its own kernels
    be.compiled_execution = False
    return be
