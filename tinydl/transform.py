"""The streaming sparse-coding transform: TinyDL's Algorithm 2 (Rouhani et al., ISCAS 2017).

Samples arrive one after another.  Each sample ``a`` is measured against the span of the
dictionary ``D`` built so far by its projection error

    Wp(a) = ||D (D^T D)^-1 D^T a - a||_2 / ||a||_2      (Wp = 1 while D is empty)

If ``Wp(a) > alpha`` and ``D`` holds fewer than ``l`` atoms, ``a`` joins ``D`` as the unit-norm
atom ``a / ||a||`` and is coded by ``||a||`` on it; otherwise ``a`` is coded by OMP with at most
``k`` non-zeros on the current ``D``.  Samples are rows here (``X`` is the paper's ``A.T``, the
dictionary ``(l, m)`` the paper's ``D.T``, dense codes ``(n, l)`` the paper's ``C.T``); see
``docs/transform.md``.

How a batch stays identical to one sample at a time (bit for bit): see
:mod:`tinydl._algorithm2`, the per-batch engine.
"""
from __future__ import annotations

import os
from typing import Any, Dict

import numpy as np

from hal.backends.numpy.basis import inverse_factor
from hal.backends.numpy.packed import gram_of

from ._algorithm2 import _SCRATCH, Algorithm2Scan
from ._execution import ExecutionPaths
from ._validation import (
    DICTIONARY_DTYPES,
    SUPPORTED_DTYPES,
    check_array,
    check_dtype,
    check_float,
    check_int,
    storage_dtype,
)
from .errors import ModelFileError, NotFittedError
from .io import load_npz, save_npz
from .omp import SparseCodes, codes_to_dense
from .standardize import apply_stats, fit_stats

__all__ = ["StreamingDictionary", "NotFittedError"]

_KIND = "transform"
#: 2: the inverse Cholesky factor "Linv" instead of the orthonormal basis "Q" and "L";
#: 3: a small-memory plan's "GLi" and "Gdiag" (G and Li packed while the dictionary fills),
#: or "G" without "Linv" (full: Li dropped) (files of versions 1 and 2 still load)
_VERSION = 3
#: 4: sparse atoms ("D_idx", "D_val" instead of "D"); written only by such a transform, so
#: that a reader of version 3 refuses them by their version instead of a missing "D"
_VERSION_SPARSE = 4
_PARAMS = ("l", "k", "alpha", "standardize", "n_standardize", "tol", "dtype", "backend",
           "block", "dictionary_dtype", "dictionary_nnz")
#: parameters that fix the shape of the state: changing them needs a new fit
_STRUCTURAL = ("l", "standardize", "n_standardize", "block", "dtype", "dictionary_dtype",
               "dictionary_nnz")
#: how the atoms may be stored (compute stays in ``dtype``; see hal.backends.numpy.stored)
#: the private state a fit owns (with every public name ending in "_"): what a restart clears,
#: never an attribute someone else set (scikit-learn's Pipeline sets its own before fit)
_PRIVATE_STATE = ("_D", "_D_scale", "_G", "_Li", "_Gd", "_fit_params", "_pending", "_n_pending")


class StreamingDictionary(ExecutionPaths, Algorithm2Scan):
    """Streaming sparse coding (TinyDL Algorithm 2): a dictionary grown from the stream itself.

    Parameters
    ----------
    l : int, default=100
        Maximum number of atoms (``l >= 1``); also the width of the dense codes.
    k : int, default=20
        Maximum non-zeros per OMP code (``k >= 1``; clipped to the atoms present).
    alpha : float, default=0.3
        Projection-error threshold in ``[0, 1]``: a sample with ``Wp > alpha`` joins D while D
        has room.  ``alpha = 1`` never adds an atom.
    standardize : bool, default=False
        Standardize each feature with a mean and standard deviation fixed from the first
        ``n_standardize`` samples of the stream (a departure from the paper; on Daily and
        Sports it is worth about 10 points of downstream accuracy at ``l=100``).  Samples that
        arrive before the statistics are fixed are buffered by :meth:`partial_fit` and
        processed, in order, once they are; :meth:`fit` on fewer samples uses them all.
        Constant features are only centred (scale 1).
    n_standardize : int, default=256
        Number of leading samples the statistics are computed from.
    tol : float, optional
        Also stop an OMP code once its relative residual is ``<= tol``.
    dtype : {None, 'float32', 'float64'}
        Compute dtype.  By default that of the first batch: float32/float64 are kept, integer
        and bool input becomes float64 and float16 becomes float32.  Later batches are converted
        to the dtype fixed by the first.
    backend : str or hal.Backend, optional
        Where matrix products and OMP run (default: :func:`hal.get_backend`).
    block : int, default=64
        Rows per matrix product (see the module docstring): the backend's OMP products run on
        ``block`` rows (the native backend's own kernels block their work themselves).
    dictionary_dtype : {None, "float32", "float64", "float16", "int8"}, default=None
        How the atoms are stored (None: the compute dtype; ``"float32"`` or ``"float64"``
        only as the compute dtype itself, else ``fit`` raises ValueError).  ``"float16"``,
        or ``"int8"``
        with a float32 scale per atom (``atom = scale * q``), halve or quarter the
        dictionary; compute stays in ``dtype``: the products decode 16 atoms at a time
        (:mod:`hal.backends.numpy.stored`, the NumPy reference, on any backend), and the Gram
        matrix and Cholesky factor are those of the stored atoms.
    dictionary_nnz : int, optional
        With ``dictionary_dtype="int8"``: keep each atom as its ``dictionary_nnz`` largest
        entries (column index and int8 value, 3 bytes an entry: :class:`hal.backends.numpy.
        stored.SparseAtoms`) instead of ``m`` bytes; for sparse data.  An atom with more
        non-zeros loses its smallest, as quantization loses bits: the Gram matrix, Wp and
        OMP are those of the atoms as stored.  With ``dictionary_nnz`` at least every
        atom's non-zeros the codes are the dense int8 dictionary's, bit for bit.  The
        NumPy reference runs it (no native kernels).

    Attributes
    ----------
    dictionary_ : ndarray of shape (n_atoms_, n_features_in_)
        The atoms as rows (the paper's ``D`` transposed), unit norm, read-only view.
    n_atoms_ : int
        Atoms in the dictionary so far (``<= l``).
    n_features_in_ : int
    n_samples_seen_ : int
        Samples consumed, including any still buffered for the standardization statistics.
    dtype_ : numpy.dtype
    mean_, scale_ : ndarray of shape (n_features_in_,) or None
        Standardization statistics once fixed.

    Notes
    -----
    A zero sample (after standardization) has ``Wp = 0``: it never joins D and its code is
    zero.  A sample whose ``Wp`` is below ``sqrt(eps)`` of the dtype is in span(D) up to
    rounding and never joins, even for ``alpha = 0``.  Memory is fixed while the stream grows:
    ``O(l m + block m)`` plus the OMP workspace and the codes returned; no sample is kept once
    coded.
    """

    def __init__(self, l=100, k=20, alpha=0.3, standardize=False, n_standardize=256,
                 tol=None, dtype=None, backend=None, block=64, dictionary_dtype=None,
                 dictionary_nnz=None):
        self.l = l
        self.k = k
        self.alpha = alpha
        self.standardize = standardize
        self.n_standardize = n_standardize
        self.tol = tol
        self.dtype = dtype
        self.backend = backend
        self.block = block
        self.dictionary_dtype = dictionary_dtype
        self.dictionary_nnz = dictionary_nnz

    # -- scikit-learn parameter protocol ---------------------------------------------------
    def get_params(self, deep: bool = True) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in _PARAMS}

    def set_params(self, **params) -> "StreamingDictionary":
        for name, value in params.items():
            if name not in _PARAMS:
                raise ValueError(f"unknown parameter {name!r}; valid: {', '.join(_PARAMS)}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        return (f"StreamingDictionary(l={self.l!r}, k={self.k!r}, alpha={self.alpha!r}, "
                f"standardize={self.standardize!r})")

    def _check_params(self, store: bool = True) -> Dict[str, Any]:
        # the checked parameters are kept with the values they came from: a steady stream of
        # one-sample calls checks them once (any set_params or attribute change re-checks)
        key = tuple(getattr(self, name) for name in _PARAMS)
        cached = self.__dict__.get("_pcache")
        if cached is not None:
            try:
                same = len(key) == len(cached[0]) and all(
                    a is b or (type(a) is type(b) and bool(a == b))
                    for a, b in zip(key, cached[0]))
            except (TypeError, ValueError):
                same = False
            if same:
                return dict(cached[1])
        p = self._check_params_uncached()
        if store:  # the execution phase leaves the estimator's __dict__ as it is
            self._pcache = (key, dict(p))
        return p

    def _check_params_uncached(self) -> Dict[str, Any]:
        p = {"l": check_int(self.l, "l", low=1),
             "k": check_int(self.k, "k", low=1),
             "alpha": check_float(self.alpha, "alpha", low=0.0, high=1.0),
             "n_standardize": check_int(self.n_standardize, "n_standardize", low=1),
             "tol": check_float(self.tol, "tol", low=0.0, allow_none=True),
             "block": check_int(self.block, "block", low=1)}
        if not isinstance(self.standardize, (bool, np.bool_)):
            raise TypeError(f"standardize must be True or False, got {self.standardize!r}")
        p["standardize"] = bool(self.standardize)
        p["dtype"] = None if self.dtype is None else check_dtype(self.dtype)
        dd = self.dictionary_dtype
        if dd is not None and str(getattr(dd, "name", dd)) not in DICTIONARY_DTYPES:
            raise ValueError(f"dictionary_dtype must be one of {', '.join(DICTIONARY_DTYPES)} "
                             f"(or None: the compute dtype), got {dd!r}")
        p["dictionary_dtype"] = None if dd is None else str(getattr(dd, "name", dd))
        nnz = self.dictionary_nnz
        p["dictionary_nnz"] = None if nnz is None else check_int(nnz, "dictionary_nnz", low=1)
        if nnz is not None and p["dictionary_dtype"] != "int8":
            raise ValueError(f"dictionary_nnz={nnz} keeps sparse int8 atoms: it needs "
                             f"dictionary_dtype='int8', got {p['dictionary_dtype']!r}")
        return p

    # -- fitted state ------------------------------------------------------------------------
    def _fitted(self) -> bool:
        return "_D" in self.__dict__

    def _require_fitted(self) -> None:
        if not self._fitted():
            raise NotFittedError("this StreamingDictionary has seen no sample yet: call "
                                 "partial_fit or fit first")

    @property
    def dictionary_(self) -> np.ndarray:
        self._require_fitted()
        if self._stored():
            from hal.backends.numpy.stored import decode
            n = self.n_atoms_
            return decode(self._D[:n], None if self._D_scale is None else self._D_scale[:n],
                          self.dtype_)
        view = self._D[:self.n_atoms_]
        view.flags.writeable = False
        return view

    def _reset(self) -> None:
        for name in list(self.__dict__):
            if name in _PARAMS:
                continue
            if name in _PRIVATE_STATE or name in _SCRATCH or (
                    name.endswith("_") and not name.startswith("__")):
                del self.__dict__[name]

    # -- copies: pickle, copy.deepcopy, joblib (which may memory-map arrays read-only) --------
    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in _SCRATCH}

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self._fitted():
            # the state arrays are written by partial_fit: a read-only copy (joblib's memory
            # map) becomes a private one; transform reads only
            for name in ("_D", "_G", "_Li", "_Gd", "_pending", "mean_", "scale_"):
                a = self.__dict__.get(name)
                if isinstance(a, np.ndarray) and not a.flags.writeable:
                    self.__dict__[name] = np.array(a, copy=True)
            self._alloc_scratch()

    def __sklearn_tags__(self):  # scikit-learn >= 1.6 asks estimators for their tags
        from ._sklearn import transformer_tags
        return transformer_tags(self)

    def _init_state(self, m: int, dtype, p: Dict[str, Any]) -> None:
        l = p["l"]
        self._fit_params = {name: p[name] for name in _STRUCTURAL}
        self._fit_params["dtype"] = np.dtype(dtype)
        self.dtype_ = np.dtype(dtype)
        self.n_features_in_ = int(m)
        self.n_samples_seen_ = 0
        self.n_atoms_ = 0
        self._alloc_basis(l, m, dtype)
        self.mean_ = None
        self.scale_ = None
        # rows waiting for the standardization statistics (None once they are fixed)
        self._pending = np.empty((p["n_standardize"], m), dtype) if p["standardize"] else None
        self._n_pending = 0
        self._alloc_scratch()

    def _state_arrays(self) -> Dict[str, np.ndarray]:
        """Every array and scalar of the fitted state (what :meth:`save` writes)."""
        if not self._fitted():
            return {"fitted": np.array(0)}
        n = self.n_atoms_
        out = {"fitted": np.array(1),
               "dtype_": np.array(self.dtype_.name),
               "n_features_in_": np.array(self.n_features_in_),
               "n_samples_seen_": np.array(self.n_samples_seen_),
               "n_atoms_": np.array(n),
               # views: save writes them as they are (a copy of the atoms was a
               # dictionary-sized transient at every checkpoint)
               # G and Li too (save_npz copies a non-contiguous one, one array at a time;
               # a full dictionary's are contiguous: no copy)
               "D_scale": (self._D_scale[:n] if self._D_scale is not None
                           else np.zeros(0, np.float32)),
               "has_stats": np.array(int(self.mean_ is not None)),
               "pending": (self._pending[:self._n_pending] if self._pending is not None
                           else np.zeros((0, self.n_features_in_), self.dtype_)),
               "buffering": np.array(int(self._pending is not None))}
        if isinstance(self._D, np.ndarray):
            out["D"] = self._D[:n]
        else:  # sparse atoms (dictionary_nnz): their indices and values
            out["D_idx"], out["D_val"] = self._D.idx[:n], self._D.val[:n]
        gd = self._packed_diag()
        if gd is not None:  # G and Li packed in one array while the dictionary fills
            out["GLi"], out["Gdiag"] = self._G[:n, :n], gd[:n]
        else:  # (a full packed dictionary dropped its Li: G alone)
            out["G"] = self._G[:n, :n]
            if self._Li is not None:
                out["Linv"] = self._Li[:n, :n]
        if self.mean_ is not None:
            out["mean_"] = self.mean_.copy()
            out["scale_"] = self.scale_.copy()
        return out

    # -- the stream ----------------------------------------------------------------------
    def fit(self, X, y=None) -> "StreamingDictionary":
        """Forget any state, then stream the rows of ``X`` in order.  Returns ``self``."""
        self._stream(X, want_codes=False, final=True, restart=True)
        return self

    def fit_transform(self, X, y=None, dense: bool = True):
        """Forget any state, stream ``X`` and return the codes Algorithm 2 gives its rows."""
        return self._codes_out(*self._stream(X, want_codes=True, final=True, restart=True),
                               dense)

    def partial_fit(self, X, y=None) -> "StreamingDictionary":
        """Run Algorithm 2 on the rows of ``X``, in order, continuing the stream.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        self

        Raises
        ------
        ValueError, TypeError
            For a bad parameter or batch (NaN/Inf, wrong shape or number of features, empty,
            complex...).  Everything is checked before any state changes.
        """
        one = self.__dict__.get("_one")  # one row, dictionary full: one bound call
        if (one is None or not one(X)) and self._fast_stream(X, False) is None:
            self._stream(X, want_codes=False, final=False)
        return self

    def partial_fit_transform(self, X, dense: bool = True):
        """Like :meth:`partial_fit`, returning the codes Algorithm 2 produces for ``X``.

        Returns
        -------
        codes : ndarray of shape (n_samples, l), or SparseCodes if ``dense=False``
            A row that joined D is coded by its norm on its own atom.  Columns past
            ``n_atoms_`` are zero.

        Raises
        ------
        ValueError
            Also if ``standardize=True`` and the standardization statistics would still not be
            fixed after this batch (its codes cannot exist yet): feed at least
            ``n_standardize`` samples, or use :meth:`partial_fit` for the first ones.
        """
        out = self._fast_stream(X, True)
        if out is None:
            out = self._stream(X, want_codes=True, final=False)
        return self._codes_out(*out, dense)

    def _check_structural(self, p, remedy: str) -> None:
        """Raise if a parameter the state was built for (``_STRUCTURAL``) differs in ``p``."""
        for name in _STRUCTURAL:
            if p[name] != self._fit_params[name] and not (name == "dtype" and p[name] is None):
                raise ValueError(f"{name} changed from {self._fit_params[name]!r} to "
                                 f"{p[name]!r} since the stream started; {remedy}")

    def _codes_out(self, idx, val, dense):
        l = self._fit_params["l"]
        if dense:  # codes the kernels wrote: indices in [-1, l)
            return codes_to_dense(idx, val, l, valid=True)
        return SparseCodes(idx, val, l)

    def _stream(self, X, want_codes: bool, final: bool, restart: bool = False):
        p = self._check_params()
        fitted = self._fitted() and not restart
        if fitted:
            self._check_structural(p, "call fit to restart")
        X = check_array(X, "X", dtype=self.dtype_ if fitted else p["dtype"],
                        n_features=self.n_features_in_ if fitted else None,
                        owner=type(self).__name__)
        n, m = X.shape
        buffering = p["standardize"] and (not fitted or self._pending is not None)
        if buffering:
            before = self._n_pending if fitted else 0
            fixes = final or before + n >= p["n_standardize"]
            if want_codes and not fixes:
                raise ValueError(
                    f"standardize=True fixes its statistics from the first n_standardize="
                    f"{p['n_standardize']} samples, but only {before + n} have arrived; the "
                    "codes of this batch cannot exist yet (feed more samples at once, use "
                    "partial_fit for the first ones, or lower n_standardize)")
        if not fitted:  # the storage named must be one the compute dtype keeps
            storage_dtype(p["dictionary_dtype"], X.dtype)
        # ---- validated: the state changes from here on
        if restart:
            self._reset()
            self._check_params()  # keep the checked parameters (_reset dropped them)
        if not fitted:
            self._init_state(m, X.dtype, p)
        self.n_samples_seen_ += n
        offset = 0
        if buffering:
            if not fixes:
                self._pending[before:before + n] = X
                self._n_pending += n
                return None
            take = min(p["n_standardize"] - before, n)
            self._pending[before:before + take] = X[:take]
            self._fix_stats(self._pending[:before + take])
            # the held rows, then the batch: raw, standardized chunk by chunk by the runner
            parts = (self._pending[:before], X) if before else (X,)
            offset = before
            self._pending = None
            self._n_pending = 0
        else:
            parts = (X,)
        n_before = self.n_atoms_
        fast = self.__dict__.get("_fast")
        if fast is None or fast[0] != self._params_key():
            self._prepare_fast(p)  # the runner, bound to the statistics as they are now
        idx, val = self._run_raw(parts, p, want_codes)
        if self.n_atoms_ != n_before or offset or restart or not fitted:
            self._ready(p)  # the dictionary changed: the execution phase follows it
        return (idx[offset:], val[offset:]) if want_codes else (None, None)

    def _run_raw(self, parts, p, want_codes: bool):
        """Algorithm 2 on the raw (checked) rows of ``parts``, in order, through the bound
        runner, as many rows per call as it takes: each chunk is standardized inside the
        call (no standardized copy of the batch); the same bits as any other split."""
        run = self._fast[3]
        total = sum(part.shape[0] for part in parts)
        kc = self._fast[4]
        idx = val = None
        if want_codes:
            idx, val = np.empty((total, kc), np.int32), np.empty((total, kc), self.dtype_)
        step = getattr(run, "rows", None) or max(total, 1)
        pos = 0
        for part in parts:
            for s in range(0, part.shape[0], step):
                chunk = part[s:s + step]
                e = pos + chunk.shape[0]
                r = run(chunk, None if idx is None else idx[pos:e],
                        None if val is None else val[pos:e], self.n_atoms_)
                if r < 0:  # the rows were checked: only a runner's own limits get here
                    raise RuntimeError(f"the backend's stream refused {chunk.shape} rows")
                self.n_atoms_ = r
                pos = e
        return idx, val

    def _ready(self, p) -> None:
        """Prepare the execution phase (OMP's Gram matrix and the encode plan the execution
        rule picks, see ``_exec_plan``) for the dictionary as it stands, unless already
        done.  On a ``compiled_execution`` backend the stream's own coding reuses that plan
        (``code_plan``): no second plan per join."""
        self._into = None  # transform_into's checked parameters: checked again
        self._drop_transform_call()  # and transform's
        if self.n_atoms_ and self._pending is None:
            self._exec_plan(p)

    def _fix_stats(self, S: np.ndarray) -> None:
        # the arithmetic of tinydl.standardize, shared with the learner's Standardizer
        self.mean_, self.scale_ = fit_stats(S, self.dtype_)

    def _standardized(self, X: np.ndarray) -> np.ndarray:
        return apply_stats(X, self.mean_, self.scale_)

    def _prepared(self, X, what: str) -> np.ndarray:
        self._require_fitted()
        if self._pending is not None:
            raise NotFittedError(
                f"standardize=True: only {self._n_pending} of n_standardize="
                f"{self._fit_params['n_standardize']} samples have arrived, so the "
                f"statistics {what} needs are not fixed yet")
        X = check_array(X, "X", dtype=self.dtype_, n_features=self.n_features_in_,
                        owner=type(self).__name__)
        return self._standardized(X)

    # -- execution phase ---------------------------------------------------------------------
    def transform(self, X, dense: bool = True):
        """Code each row of ``X`` by OMP on the current dictionary; the state does not change.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)
        dense : bool, default=True

        Returns
        -------
        codes : ndarray of shape (n_samples, l), or SparseCodes (k indices and values)
        """
        # the checked parameters and the plan: transform_into's (_into), else transform's
        # own, kept in a holder (transform leaves __dict__ as it is); both are emptied by a
        # change of the state (_ready) or of a parameter (__setattr__), so either stands for
        # the checks _prepare_into makes (parameters, fitted, statistics fixed)
        d = self.__dict__
        held = d.get("_into_t")
        for into in (d.get("_into"), None if held is None else held[0]):
            if into is not None and into[0] is self.k and into[1] is self.tol:
                break
        else:  # (the checks raise for bad parameters, no fit, statistics not fixed yet)
            into = self._prepare_into(store=False)
            if held is not None:
                held[0] = into
        if not (type(X) is np.ndarray and X.ndim == 2 and X.dtype == self.dtype_
                and X.flags.c_contiguous and X.shape[1] == self.n_features_in_
                and X.shape[0]):  # else converted here; transform_into takes it as it is
            X = np.ascontiguousarray(check_array(X, "X", dtype=self.dtype_,
                                                 n_features=self.n_features_in_,
                                                 owner=type(self).__name__))
        kc = into[2]
        idx = np.empty((X.shape[0], kc), np.int32)
        val = np.empty((X.shape[0], kc), self.dtype_)
        # finiteness, standardization, codes: one call (one row: the one-row kernel call)
        one = into[7]
        if one is None or not one(X, idx, val):
            self._encode_into(X, idx, val, into)
        return self._codes_out(idx, val, dense)

    def projection_error(self, X) -> np.ndarray:
        """``Wp`` of each row of ``X`` against the current dictionary, shape (n_samples,).

        ``Wp = ||D D^+ a - a|| / ||a||`` in ``[0, 1]`` (1 while D is empty, 0 for a zero
        sample), after standardization when it is on.
        """
        self._check_params(store=False)
        X = self._prepared(X, "projection_error")
        return self._wp_rows(X)

    def reconstruct(self, codes) -> np.ndarray:
        """``codes @ D``: samples (standardized, if on) from dense (n, l) codes."""
        self._require_fitted()
        if isinstance(codes, SparseCodes):
            codes = codes.to_dense()
        l = self._fit_params["l"]
        codes = check_array(codes, "codes", dtype=self.dtype_, n_features=l)
        if self._stored():  # the decoded atoms (columns past n_atoms_ are zero)
            return codes[:, :self.n_atoms_] @ self.dictionary_
        return codes @ self._D[:l]

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write parameters and state to ``path`` (``.npz``, atomically, no pickle).

        Raises
        ------
        ValueError
            If a parameter the state was built for (``l``, ``standardize``,
            ``n_standardize``, ``block``, ``dtype``, ``dictionary_dtype``,
            ``dictionary_nnz``) was changed since the stream started: the file would
            pair the new value with the old state, which no load could read back.
        """
        p = self._check_params(store=False)
        if self._fitted():
            self._check_structural(p, "set it back before saving, or call fit to restart")
        be = self.backend if isinstance(self.backend, str) else \
            getattr(self.backend, "name", "") if self.backend is not None else ""
        arrays = {"l": np.array(p["l"]), "k": np.array(p["k"]),
                  "alpha": np.array(p["alpha"]),
                  "standardize": np.array(int(p["standardize"])),
                  "n_standardize": np.array(p["n_standardize"]),
                  "tol": np.array(np.nan if p["tol"] is None else p["tol"]),
                  "dtype": np.array("" if p["dtype"] is None else p["dtype"].name),
                  "backend": np.array(be), "block": np.array(p["block"]),
                  "dictionary_dtype": np.array(p["dictionary_dtype"] or ""),
                  "dictionary_nnz": np.array(p["dictionary_nnz"] or 0)}
        arrays.update(self._state_arrays())
        save_npz(path, arrays, _KIND, _VERSION_SPARSE if "D_idx" in arrays else _VERSION)

    @classmethod
    def load(cls, path, backend=None) -> "StreamingDictionary":
        """Read a transform written by :meth:`save`; it continues the stream exactly.

        Raises
        ------
        ModelFileError
            If the file is damaged, of another kind, or inconsistent.
        """
        path = os.fspath(path)
        data = load_npz(path, _KIND, required=("l", "k", "alpha", "standardize",
                                               "n_standardize", "tol", "dtype", "block",
                                               "fitted"), max_version=_VERSION_SPARSE)
        try:
            return cls._from_arrays(data, backend, path)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            if isinstance(exc, ModelFileError):
                raise
            raise ModelFileError(f"{path} holds an inconsistent transform: "
                                 f"{type(exc).__name__}: {exc}") from None

    @classmethod
    def _from_arrays(cls, data, backend, path):
        def num(key):
            a = data[key]
            if a.shape != () or a.dtype.kind not in "biuf":
                raise ValueError(f"{key!r} should be a number, got shape {a.shape} "
                                 f"dtype {a.dtype}")
            return a.item()

        tol = float(num("tol"))
        dtype = str(data["dtype"])
        be = str(data["backend"]) if "backend" in data else ""
        est = cls(l=int(num("l")), k=int(num("k")), alpha=float(num("alpha")),
                  standardize=bool(num("standardize")),
                  n_standardize=int(num("n_standardize")),
                  tol=None if np.isnan(tol) else tol, dtype=dtype or None,
                  backend=backend if backend is not None else (be or None),
                  block=int(num("block")),
                  dictionary_dtype=(str(data["dictionary_dtype"]) or None)
                  if "dictionary_dtype" in data else None,
                  dictionary_nnz=(int(num("dictionary_nnz")) or None)
                  if "dictionary_nnz" in data else None)
        p = est._check_params()
        if not num("fitted"):
            return est
        dt = np.dtype(str(data["dtype_"]))
        if dt not in SUPPORTED_DTYPES:
            raise ValueError(f"dtype_ {dt} is not float32 or float64")
        m, n = int(num("n_features_in_")), int(num("n_atoms_"))
        if not (m >= 1 and 0 <= n <= p["l"]):
            raise ValueError(f"n_features_in_={m}, n_atoms_={n} with l={p['l']}")
        arrs = {}
        sdt = np.dtype(p["dictionary_dtype"] or dt)
        sparse = None
        if p["dictionary_nnz"] is not None:  # sparse atoms: decoded for the checks below
            from hal.backends.numpy.stored import SparseAtoms
            sparse = SparseAtoms(n, m, p["dictionary_nnz"])
            idx = _finite(data, "D_idx", sparse.idx.shape, np.dtype(np.uint16))
            if idx.size and int(idx.max()) >= m:
                raise ValueError(f"D_idx holds column {int(idx.max())} >= m={m}")
            sparse.idx[:] = idx
            sparse.val[:] = _finite(data, "D_val", sparse.val.shape, sdt)
            arrs["D"] = sparse[:n]
        else:
            arrs["D"] = _finite(data, "D", (n, m), sdt)
        if sdt == np.int8:
            arrs["D_scale"] = _finite(data, "D_scale", (n,), np.dtype(np.float32))
            q = sparse.val if sparse is not None else arrs["D"]
            if q.size and int(q.min()) < -127:  # the quantizer's range is -127..127
                raise ValueError(f"D holds int8 value {int(q.min())}; stored atoms lie in "
                                 "-127..127")
            bad = np.flatnonzero(~(arrs["D_scale"] > 0))
            if bad.size:
                raise ValueError(f"D_scale[{int(bad[0])}] = {float(arrs['D_scale'][bad[0]]):.6g}: "
                                 f"an atom's scale must be > 0 ({bad.size} of {n} are not)")
        if "GLi" in data:  # packed (hal.backends.numpy.packed): G's upper triangle and Li
            P = _finite(data, "GLi", (n, n), dt)
            arrs["G"] = gram_of(P, _finite(data, "Gdiag", (n,), dt))
            arrs["Linv"] = np.tril(P)
        else:
            arrs["G"] = _finite(data, "G", (n, n), dt)
            arrs["Linv"] = _inverse_factor_of(data, arrs["D"], arrs["G"], n, m, dt, p["l"])
        _check_gram(arrs["D"], arrs.get("D_scale"), arrs["G"], dt)
        est._init_state(m, dt, p)
        est.n_samples_seen_ = int(num("n_samples_seen_"))
        if sparse is not None:
            est._D.idx[:n], est._D.val[:n] = sparse.idx, sparse.val
        else:
            est._D[:n] = arrs["D"]
        est._G[:n, :n] = arrs["G"]
        if est._Li is not None:
            est._Li[:n, :n] = arrs["Linv"] if arrs["Linv"] is not None else \
                inverse_factor(arrs["G"], dt)
        elif n < p["l"]:  # packed: Li below G's diagonal, G's diagonal apart
            est._Gd[:n] = np.diagonal(arrs["G"])
            est._G[:n, :n][np.tril_indices(n)] = arrs["Linv"][np.tril_indices(n)]
        if "D_scale" in arrs:
            est._D_scale[:n] = arrs["D_scale"]
        est.n_atoms_ = n
        if num("has_stats"):
            est.mean_, est.scale_ = (_finite(data, key, (m,), dt).copy()
                                     for key in ("mean_", "scale_"))
        if num("buffering"):
            pend = data["pending"]
            if pend.ndim != 2 or pend.shape[1] != m or pend.shape[0] > p["n_standardize"] \
                    or pend.dtype != dt:
                raise ValueError(f"pending should be {dt} of shape (<= {p['n_standardize']},"
                                 f" {m}), got {pend.dtype} {pend.shape}")
            est._pending[:pend.shape[0]] = pend
            est._n_pending = pend.shape[0]
        else:
            est._pending = None
        est._alloc_scratch()  # bind the state as loaded (a backend may keep a copy of D)
        est._ready(p)
        return est


def _inverse_factor_of(data, D, G, n, m, dt, l):
    """Li of a file that keeps G apart: its ``Linv``, None for a full dictionary that
    dropped it (a packed one; computed from G where a backend needs it), or from the older
    formats' factors."""
    if "Linv" in data:
        return _finite(data, "Linv", (n, n), dt)
    if "L" not in data and "Q" not in data:
        if n < l:
            raise ValueError(f"Linv is missing: a dictionary still filling (n_atoms_={n} < "
                             f"l={l}) keeps it")
        gd = np.diagonal(G)
        if n and not (gd > 0).all():
            raise ValueError(f"G's diagonal (the atoms' squared norms) should be positive, "
                             f"got {float(gd.min())} at atom {int(np.argmin(gd))}")
        return None
    # version 1 kept D = L Q (Q orthonormal): L is G's Cholesky factor
    if "L" in data:
        L = _finite(data, "L", (n, n), dt).astype(np.float64)
    else:  # older still: L = D Q^T
        L = np.tril(D.astype(np.float64) @ _finite(data, "Q", (n, m), dt).T.astype(np.float64))
    return np.tril(np.linalg.inv(L)).astype(dt) if n else np.zeros((0, 0), dt)


def _check_gram(D, scale, G, dt) -> None:
    """Raise unless ``G`` is the Gram matrix of the atoms ``D`` (decoded with ``scale``: the
    atoms as stored) up to the compute dtype's rounding, and no atom is zero: what catches a
    file whose atoms, scales or Gram matrix were changed apart from each other (the codes
    would be silently wrong).  One pass in float64, n^2 m multiply-adds."""
    n = G.shape[0]
    if not n:
        return
    A = np.asarray(D[:n], np.float64)
    if scale is not None:
        A = A * np.asarray(scale[:n], np.float64)[:, None]
    ref = A @ A.T
    d = np.sqrt(np.diagonal(ref))
    if not (d > 0).all():
        j = int(np.argmin(d))
        raise ValueError(f"atom {j} of {n} is zero (atoms are unit-norm samples)")
    # the file's G was summed in the compute dtype over m products: the worst case of such a
    # sum's rounding is about m eps |a_i| |a_j| (a tampered atom or scale is off by O(1))
    tol = 2.0 * (A.shape[1] + 2) * float(np.finfo(dt).eps)
    err = np.abs(np.asarray(G, np.float64) - ref) / np.outer(d, d)
    if not err.max() <= tol:
        i, j = np.unravel_index(int(np.argmax(err)), err.shape)
        raise ValueError(f"G is not the Gram matrix of the stored atoms (a packed file keeps "
                         f"it as GLi and Gdiag): G[{i}, {j}] = {float(G[i, j]):.6g}, the atoms "
                         f"give {float(ref[i, j]):.6g} (relative error {float(err[i, j]):.3g} "
                         f"> {tol:.3g})")


def _finite(data, key, shape, dt) -> np.ndarray:
    """``data[key]``, checked to be finite ``dt`` of ``shape`` (the message gives the first
    non-finite value's position and how many there are)."""
    a = data[key]
    if a.shape != shape or a.dtype != dt:
        raise ValueError(f"{key} should be finite {dt} of shape {shape}, got {a.dtype} {a.shape}")
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a)
        if bad.any():
            pos = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{key} should be finite: {int(bad.sum())} of {a.size} values are "
                             f"not, the first {float(a[pos])} at {pos}")
    return a
