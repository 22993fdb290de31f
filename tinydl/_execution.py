"""The transform's lean paths: the execution phase into caller-owned codes
(:meth:`ExecutionPaths.transform_into`) and a few rows streamed by one bound call
(:meth:`ExecutionPaths._fast_stream`, behind ``partial_fit`` and ``partial_fit_transform``).

A mixin of :class:`tinydl.transform.StreamingDictionary`: "prepare, then invoke".  What
depends only on the dictionary and the parameters (the backend's encode plan, its bound
runner) is made once - at the end of a fit, on load, when the dictionary changes - and a
one-sample call then checks its arrays and makes one kernel call.  Both paths give the same
bits as the checked ones (the same kernels); anything they do not take (another dtype or
layout, a changed parameter) goes the checked way.
"""
from __future__ import annotations

import operator

import numpy as np

from hal.backends.numpy.omp import kernel_coded

from ._algorithm2 import _refine_below, _wp_floor

__all__ = ["ExecutionPaths"]

#: most rows a call streams through the bound runner (:meth:`ExecutionPaths._fast_stream`)
_FAST_ROWS = 48  # (CSB in the native kernels: one block)


class ExecutionPaths:
    """Mixin of :class:`~tinydl.transform.StreamingDictionary` (see the module docstring)."""

    def transform_into(self, X, indices, values) -> None:
        """Code the rows of ``X`` into caller-owned arrays; the allocation-free execution path.

        The same codes as ``transform(X, dense=False)`` (its ``indices`` and ``values``), bit
        for bit, without allocating: the one-sample path of a device that classifies each
        sample as it arrives.

        Parameters
        ----------
        X : ndarray of shape (n, n_features_in_)
            Raw rows (standardized here when ``standardize=True``), dtype ``dtype_``,
            C-contiguous, finite.  Nothing is converted: other input raises.
        indices : ndarray of shape (n, kc), int32, C-contiguous
            Receives each row's atoms in selection order, ``-1`` past its non-zeros
            (``kc = min(k, l)``).
        values : ndarray of shape (n, kc), dtype ``dtype_``, C-contiguous
            Receives the coefficients, ``0`` past the non-zeros.

        Raises
        ------
        NotFittedError
            Before the first sample (or while standardization statistics are pending).
        ValueError
            For an array of the wrong type, dtype, shape or layout, or a NaN/Inf in ``X``
            (the message gives the numbers); the outputs are then left untouched.
        """
        into = self.__dict__.get("_into")
        if into is None or into[0] is not self.k or into[1] is not self.tol:
            into = self._prepare_into()
        one = into[7]
        if one is None or not one(X, indices, values):
            self._encode_into(X, indices, values, into)

    def _encode_into(self, X, indices, values, into) -> None:
        _, _, kc, m, dt, pfx, plan, _ = into
        if not (type(X) is np.ndarray and X.ndim == 2 and X.shape[1] == m and X.dtype == dt
                and X.flags.c_contiguous and X.shape[0] >= 1):
            raise ValueError(f"{pfx}X must be a C-contiguous {dt} ndarray of shape (n >= 1, "
                             f"{m}), got {_describe(X)}")
        n = X.shape[0]
        for name, a, adt in (("indices", indices, _INT32), ("values", values, dt)):
            if not (type(a) is np.ndarray and a.shape == (n, kc) and a.dtype == adt
                    and a.flags.c_contiguous and a.flags.writeable):
                raise ValueError(f"{pfx}{name} must be a writeable C-contiguous {adt} "
                                 f"ndarray of shape ({n}, {kc}), got {_describe(a)}")
        if plan is None:  # an empty dictionary codes everything as zero
            if not np.isfinite(X).all():
                from hal.backends.numpy.encode import nonfinite_error
                raise nonfinite_error(X, "transform_into: ")
            indices.fill(-1)
            values.fill(0)
            return
        plan.encode(X, indices, values)

    def _prepare_into(self, store: bool = True):
        """Check the parameters :meth:`transform_into` depends on and keep them (if
        ``store``) with the values they came from (``k`` and ``tol``: a change re-prepares;
        so does any change of the stream's state, see :meth:`_ready`)."""
        p = self._check_params(store=False)
        self._require_fitted()
        if self._pending is not None:
            self._prepared(np.zeros((1, self.n_features_in_), self.dtype_), "transform")
        kc = min(p["k"], self._fit_params["l"])
        plan = self._exec_plan(p) if self.n_atoms_ else None
        m, dt = self.n_features_in_, self.dtype_
        into = (self.k, self.tol, kc, m, dt, "transform_into: ", plan,
                _one_row_into(plan, m, dt, kc))
        if store:
            self._into = into
        return into

    def _fast_stream(self, X, want_codes: bool):
        """The stream of a few conforming rows (an ndarray of ``dtype_``, C-contiguous, at
        most ``_FAST_ROWS``) once the statistics are fixed, with unchanged parameters: one
        call of the backend's bound runner (finiteness, standardization, Algorithm 2), none
        of the per-call checks and conversions of :meth:`_stream`.  Returns the codes, or None
        where the checked path must run (which also raises for a bad batch: nothing has
        changed then).  The same bits as the checked path (the same kernels)."""
        d = self.__dict__
        f = d.get("_fast")
        if f is None or type(X) is not np.ndarray:
            return None
        shape = X.shape
        if len(shape) != 2 or shape[1] != f[1] or not 0 < shape[0] <= _FAST_ROWS \
                or (X.dtype is not f[2] and X.dtype != f[2]) or not X.flags.c_contiguous:
            return None
        try:  # the parameters as set, read from the instance's dict in one C-level call
            if _params_in(d) != f[0]:  # (the attribute lookups cost ~0.5 us a row)
                return None
        except (KeyError, TypeError, ValueError):  # not set there, or set to something odd:
            return None                            # the checks say
        n = shape[0]
        if want_codes:
            idx, val = np.empty((n, f[4]), np.int32), np.empty((n, f[4]), f[2])
            r = f[3](X, idx, val, self.n_atoms_)
        else:  # the codes go to the runner's own scratch
            idx = val = None
            if n == 1 and self.n_atoms_ == f[6] and d.get("_one") is None:
                self._bind_one(f)  # full: this row and the next take the one-row call
                if self._one(X):   # (bound before anything changes: a failure to bind
                    return None, None  # leaves the state as it was)
            r = f[5](X, self.n_atoms_)
        if r < 0:
            return None
        self.n_samples_seen_ += n
        if r != self.n_atoms_:
            self.n_atoms_ = r
            self._ready(self._check_params())
        return idx, val

    def _bind_one(self, f) -> None:
        """Bind ``_one``: ``partial_fit`` of one row once the dictionary is full, in one
        bound kernel call (the runner's ``steady_row``: no Wp test, nothing can join) and
        one Python frame, for the runner ``f`` (``_fast``: cleared with it)."""
        make = getattr(f[3], "steady_row", None)
        row = None if make is None else make()
        if getattr(row, "kernel", None) is None:
            self._one = _never
            return
        d, ndarray = self.__dict__, np.ndarray
        shape, dt, lmax, k, m = (1, f[1]), f[2], f[6], f[0][_PARAMS.index("k")], f[1]
        fn, st, ct = row.kernel
        rfb = row.rfb

        def one(X) -> bool:
            """``partial_fit(X)`` for one conforming row in the steady state: True when
            done; False (nothing done) where ``partial_fit`` must take its other paths (a
            row that is not one C-contiguous row of ``dtype_``, a NaN or Inf: the checked
            path converts or raises).  A parameter set since is not checked here: setting
            one drops this call (``__setattr__``), and ``_fast_stream`` checks them."""
            if type(X) is not ndarray or X.dtype is not dt or X.shape != shape \
                    or d["n_atoms_"] != lmax:
                return False
            try:  # the row's pointer: cffi refuses an array that is not C-contiguous
                x = rfb(ct, X, False)  # (a check of X.flags costs as much again)
            except (ValueError, BufferError):
                return False
            dep = fn(st, x)  # the kernel: < 0 for a NaN or Inf, else the samples OMP
            if dep and not kernel_coded(dep, 1, lmax, k, m):  # stopped early (0 or 1)
                return False
            d["n_samples_seen_"] += 1
            return True
        one.keep = row  # what the kernel's pointers point into
        self._one = one

    def __setattr__(self, name, value):
        # a parameter assigned (set_params assigns too): the one-row call, which does not
        # check the parameters itself (~0.2 us a row), goes; _fast_stream checks them
        if name in _PARAM_NAMES:
            self.__dict__.pop("_one", None)
            self._drop_transform_call()
        super().__setattr__(name, value)

    def _drop_transform_call(self) -> None:
        """Empty the holder of ``transform``'s prepared call (its checks, plan and one-row
        call), so that the next call prepares it again; the holder itself stays (transform
        fills it without changing ``__dict__``)."""
        held = self.__dict__.get("_into_t")
        if held is not None:
            held[0] = None

    def _params_key(self):
        """The parameters as set (what a bound runner was made for; == compares each by
        identity first)."""
        return _params_key(self)

    def _prepare_fast(self, p) -> None:
        """Bind the runner :meth:`_fast_stream` calls (the end of every checked batch)."""
        self._fast = self._one = None
        if self._pending is not None:
            return
        kc = min(p["k"], p["l"])
        thr = max(p["alpha"], _wp_floor(self.dtype_))
        run = self._bws.runner(p["l"], p["k"], p["tol"], thr, _refine_below(thr), kc,
                               _FAST_ROWS, self.mean_, self.scale_)
        lean = getattr(run, "lean", None)  # the runner without codes (partial_fit)
        if lean is None:
            def lean(X, n):
                return run(X, None, None, n)
        self._fast = (self._params_key(), self.n_features_in_, self.dtype_, run, kc, lean,
                      p["l"])


_INT32 = np.dtype(np.int32)
#: the parameters as set, one C-level call (the one-row path checks them on every call)
_PARAMS = ("l", "k", "alpha", "standardize", "n_standardize", "tol", "dtype", "backend",
           "block", "dictionary_dtype", "dictionary_nnz")
_params_key = operator.attrgetter(*_PARAMS)
#: the same from an instance's ``__dict__`` (the same objects where they are plain instance
#: attributes, as an estimator's parameters are; a KeyError otherwise)
_params_in = operator.itemgetter(*_PARAMS)
_PARAM_NAMES = frozenset(_PARAMS)


def _one_row_into(plan, m, dt, kc):
    """``transform_into`` of one row in one Python frame, or None where the plan has no
    kernel call to offer (``kernel_rows``): ``one(X, indices, values) -> bool``, False
    (nothing written) where the checked path must run - an array not of the shape and dtype
    asked (or, as cffi refuses its pointer, not C-contiguous, or read-only codes), a NaN or
    Inf - which converts nothing and raises naming the problem."""
    make = getattr(plan, "kernel_rows", None)
    if make is None:
        return None
    fn, st, rt, it, rfb = make()
    ndarray, shape, kshape, i32 = np.ndarray, (1, m), (1, kc), _INT32
    l, k = plan.l, plan.k

    def one(X, indices, values) -> bool:
        if type(X) is not ndarray or X.dtype is not dt or X.shape != shape \
                or type(indices) is not ndarray or indices.dtype is not i32 \
                or indices.shape != kshape or type(values) is not ndarray \
                or values.dtype is not dt or values.shape != kshape:
            return False
        try:
            x, pi, pv = rfb(rt, X, False), rfb(it, indices, True), rfb(rt, values, True)
        except (ValueError, BufferError):
            return False
        dep = fn(st, 1, x, pi, pv)
        return not dep or kernel_coded(dep, 1, l, k, m)
    one.keep = plan  # what the kernel's struct points into
    return one


def _never(X) -> bool:
    """``_one`` where the runner has no one-row call: partial_fit takes its other paths."""
    return False


def _describe(a) -> str:
    """A short description of what was passed (for the errors of ``transform_into``)."""
    if not isinstance(a, np.ndarray):
        return type(a).__name__
    layout = "C-contiguous" if a.flags.c_contiguous else "non-contiguous"
    ro = "" if a.flags.writeable else " read-only"
    return f"{layout}{ro} {a.dtype} of shape {a.shape}"
