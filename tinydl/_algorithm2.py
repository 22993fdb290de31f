"""Algorithm 2 of the TinyDL paper on a validated, standardized batch: the Wp test, the joins
and the OMP codes of the rows between them.

A mixin of :class:`tinydl.transform.StreamingDictionary` (which owns the state: ``_D``,
``_G``, ``_Li`` and the backend ``_be`` with its workspace ``_bws``, allocated here by
:meth:`Algorithm2Scan._alloc_basis` and ``_alloc_scratch``).  The work itself is the backend's
(:meth:`hal.Backend.prepare_basis`; NumPy's specification is ``hal.backends.numpy.basis``,
the native backend runs a whole batch in one C call):

* ``Wp`` comes from the Cholesky factor of the dictionary's Gram matrix and the correlations
  ``c = D a`` that OMP needs anyway: ``Wp^2 = 1 - |L^-1 c|^2 / |a|^2`` (the inverse factor
  ``Li = L^-1`` is kept), or the explicit residual where that difference cancels
  (``Wp^2 < 0.01``, and only where the threshold ``alpha`` lies in that range: elsewhere the
  decision cannot flip).  No second dictionary-sized array (an orthonormal basis) is kept;
* a join appends one row to D, one row and column to G and one row to ``Li`` (a triangular
  product, O(l^2));
* once D holds ``l`` atoms nothing can join and no Wp is computed: plain OMP.

How a batch stays identical to one sample at a time (bit for bit, with one BLAS thread): each
row's values depend only on that row and the state at its time - NumPy computes its products
on fixed-size zero-padded tiles (``rows_matmul``), the native kernels in a fixed order per
value - and the scan restarts right after a join.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

import hal
from hal.backends.numpy.basis import REFINE_WP2
from hal.backends.numpy.omp import BatchOMP
from hal.backends.numpy.packed import gram_of

__all__ = ["Algorithm2Scan"]

#: scratch and the bound backend (``_alloc_scratch``): rebuilt on unpickling, never pickled
#: (a copy that joblib memory-maps read-only must not be written to)
_SCRATCH = ("_be", "_bws", "_pcache", "_into", "_into_t", "_into_p", "_plan_p", "_fast",
            "_one")
_FLOORS: Dict[Any, float] = {}


def _wp_floor(dtype) -> float:
    """Smallest Wp that can make a new atom: below it the sample is in span(D) up to rounding
    and its direction would be noise (D would become rank-deficient)."""
    floor = _FLOORS.get(dtype)
    if floor is None:
        floor = _FLOORS[dtype] = float(np.sqrt(np.finfo(dtype).eps))
    return floor


def _refine_below(thr: float) -> float:
    """The Wp^2 below which the test takes the explicit residual: only where the threshold
    itself lies in the range where ``1 - |z|^2/|a|^2`` cancels (a Wp^2 of 0.01 computed the
    cheap way is off by a few eps times L's conditioning, far from an alpha^2 above 0.02)."""
    return REFINE_WP2 if thr * thr < 2 * REFINE_WP2 else 0.0


class Algorithm2Scan:
    """The per-batch engine of :class:`~tinydl.transform.StreamingDictionary` (a mixin: it
    reads and updates the transform's state arrays)."""

    def _alloc_basis(self, l: int, m: int, dtype) -> None:
        """The dictionary's state arrays for ``l`` atoms of ``m`` features, all zero."""
        # at least 2 rows, zero past n_atoms_: NumPy's products always see >= 2 atoms (a
        # single-column product goes through BLAS gemv, whose rounding depends on the row's
        # position in the block)
        lb = max(l, 2)
        # atoms as rows, unit norm, in their storage dtype (int8: with a scale per atom)
        store = self._fit_params.get("dictionary_dtype") or np.dtype(dtype).name
        if store not in ("float16", "int8"):  # not narrower: stored as computed
            store = np.dtype(dtype).name
        nnz = self._fit_params.get("dictionary_nnz")
        if nnz is not None:  # int8 atoms as their nnz largest entries (sparse data)
            from hal.backends.numpy.stored import SparseAtoms
            self._D = SparseAtoms(lb, m, nnz)
        else:
            self._D = np.zeros((lb, m), store)
        self._D_scale = np.ones(lb, np.float32) if store == "int8" else None
        self._G = np.zeros((lb, lb), dtype)  # D D^T
        if store != np.dtype(dtype).name and getattr(self.backend, "packed_gram", False):
            # a small-memory plan's backend (tinydl.lowmem.plan_backend): Li packed below G's
            # diagonal while the dictionary fills, dropped when it is full
            # (hal.backends.numpy.packed); G's diagonal apart
            self._Li, self._Gd = None, np.zeros(lb, dtype)
        else:
            self._Li = np.zeros((lb, lb), dtype)  # L^-1, G[:n, :n] = L L^T (lower triangular)
            self._Gd = None

    def _alloc_scratch(self) -> None:
        """Bind the state to the backend (after any change of the state arrays made other
        than by a batch: a load, an unpickling)."""
        self._bws = self._fast = self._one = None
        # transform's prepared call (a holder bound here: transform fills it without
        # changing __dict__, scikit-learn's check_dict_unchanged; emptied with _into)
        self._into_t = [None]
        self._be = hal.get_backend(self.backend, block=self._fit_params["block"])
        if self._stored():
            # narrower storage: the NumPy reference (hal.backends.numpy.stored) decodes tiles
            # (a backend with kernels for them offers prepare_stored_basis: native, stored.c)
            from hal.backends.numpy.stored import StoredBasisWorkspace
            # NumPy's Batch-OMP where the backend has no OMP, and for Li packed or dropped
            # (``_Li`` None): that OMP reads a packed G, an OMP kernel of its own (native's)
            # takes plain arrays (a transform moved there by set_params keeps its state)
            omp = getattr(type(self._be), "_omp_chunk", None)
            if omp is None or (self._Li is None and omp is not BatchOMP._omp_chunk):
                self._be = hal.get_backend("numpy", block=self._fit_params["block"])
            if self._Li is None or not isinstance(self._D, np.ndarray):
                # the NumPy workspace's: Li packed (or dropped when full), or sparse atoms
                self._bws = StoredBasisWorkspace(self._be, self._D, self._D_scale, self._G,
                                                 self._Li, gdiag=self._packed_diag())
            else:
                make = getattr(self._be, "prepare_stored_basis", None) or (
                    lambda *a: StoredBasisWorkspace(self._be, *a))
                self._bws = make(self._D, self._D_scale, self._G, self._Li)
        else:
            self._bws = self._be.prepare_basis(self._D, self._G, self._Li)
        self._plan_p = None

    def _idle_scratch(self) -> list:
        """Arrays of the backend's workspace whose contents are dead between calls (what the
        learner lends to its network while it retrains: no transform runs then)."""
        lend = getattr(self._bws, "scratch", None)
        return lend() if lend is not None else []

    def _packed_diag(self):
        """G's diagonal while G and Li are packed in ``_G`` (the dictionary fills), else None
        (no Li, or ``_G`` the plain Gram matrix of a full dictionary that dropped its Li)."""
        if self._Gd is None or self.n_atoms_ >= self._fit_params["l"]:
            return None
        return self._Gd

    def _gram_matrix(self) -> np.ndarray:
        """``G[:n, :n]`` of the atoms in use: a view, or a new array where G is packed with
        Li (a small-memory plan's dictionary while it fills)."""
        n, gd = self.n_atoms_, self._packed_diag()
        return self._G[:n, :n] if gd is None else gram_of(self._G[:n, :n], gd[:n])

    def _stored(self) -> bool:
        """Whether the atoms are stored in another dtype than the compute dtype."""
        return self._D.dtype != self._G.dtype  # (sparse atoms are int8)

    def _wp_rows(self, X: np.ndarray) -> np.ndarray:
        """Wp of each (standardized) row of ``X`` against the current dictionary."""
        return self._bws.wp(self.n_atoms_, np.ascontiguousarray(X))

    def _plan(self, p):
        """The execution phase's encode plan for the dictionary as it stands (the backend
        makes it once per dictionary size, ``k``, ``tol`` and statistics)."""
        return self._bws.plan(self.n_atoms_, p["k"], tol=p["tol"],
                              width=min(p["k"], p["l"]), mean=self.mean_, scale=self.scale_)

    def _exec_plan(self, p):
        """The execution phase's encode plan (``transform``, ``transform_into``, the
        learner's one-sample predict): the workspace's ``exec_plan`` where it has one (the
        native per-row kernels for a ``compiled_execution`` backend, see
        :mod:`hal.execution`), else the training plan of :meth:`_plan`."""
        make = getattr(self._bws, "exec_plan", None)
        if make is None:
            return self._plan(p)
        return make(self.n_atoms_, p["k"], tol=p["tol"], width=min(p["k"], p["l"]),
                    mean=self.mean_, scale=self.scale_)
