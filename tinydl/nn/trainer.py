"""The training loop of :class:`~tinydl.nn.classifier.NetworkClassifier`, and its input checks.

:class:`Trainer` runs mini-batch SGD (or Adam) passes over validated data, allocation-free
per batch (buffers reused across calls), with an optional public data-parallel gradient hook
(:attr:`Trainer.grad_hook`, used by :mod:`tinydl.distributed`).  :class:`InputChecks`
validates ``X`` (dense rows or :class:`~tinydl.codes.SparseCodes`) and ``y`` once per call.
"""
from __future__ import annotations

import sys
import warnings

import numpy as np

from .._validation import check_array
from ..codes import SparseCodes
from ..errors import DataConversionWarning, DivergenceError
from .layers import Dense
from .optim import SGD

__all__ = ["Trainer", "InputChecks"]


def _check_param(name, value, kind, low=None, high=None, choices=None, low_open=False):
    """``value`` checked against a choice set or a numeric range (the error names both)."""
    if choices is not None:
        if value not in choices:
            raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
        return value
    ok_types = (int, np.integer) if kind == "int" else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, ok_types):
        raise TypeError(f"{name} must be {'an integer' if kind == 'int' else 'a number'}, "
                        f"got {value!r}")
    if not np.isfinite(value) or (low is not None and (value <= low if low_open else value < low)) \
            or (high is not None and value > high):
        lo = "(" if low_open else "["
        raise ValueError(f"{name} must be in {lo}{low}, {high if high is not None else 'inf'}], "
                         f"got {value!r}")
    return value


def conversion_warning():
    """tinydl's DataConversionWarning; where scikit-learn is loaded, one that is also
    scikit-learn's (so that its tooling and checks recognise it)."""
    sk = sys.modules.get("sklearn.exceptions")
    if sk is None:
        return DataConversionWarning
    global _BOTH
    if _BOTH is None:
        _BOTH = type("DataConversionWarning", (DataConversionWarning,
                                               sk.DataConversionWarning), {
            "__module__": DataConversionWarning.__module__,
            "__doc__": DataConversionWarning.__doc__})
    return _BOTH


_BOTH = None


class InputChecks:
    """Validation of a classifier's ``X`` and ``y`` (the model's ``dtype`` and ``classes_``)."""

    def _check_X(self, X, n_features=None, train=False):
        """Dense rows (n, n_features) in the model's dtype, or validated compact codes (a
        :class:`~tinydl.codes.SparseCodes` in the model's dtype, int32 indices, zero values in
        the padding); returns (data, n_samples, n_features, is_sparse).  With ``train``,
        narrower signed indices (int8, int16: a code window's compact ones) are kept as they
        are, not copied to int32: training gathers each mini-batch's into its own int32
        buffer (:class:`Trainer`)."""
        dtype = np.dtype(self.dtype)
        if hasattr(X, "indices") and hasattr(X, "values") and hasattr(X, "n_atoms"):
            idx = np.asarray(X.indices)
            if idx.dtype.kind not in "iu" or idx.ndim != 2:
                raise TypeError(f"codes' indices must be a 2-D integer array, got dtype "
                                f"{idx.dtype} shape {idx.shape}")
            vals = check_array(X.values, "codes' values", dtype=dtype)
            if vals.shape != idx.shape:
                raise ValueError(f"codes' values have shape {vals.shape}, indices {idx.shape}")
            l = int(X.n_atoms)
            if n_features is not None and l != n_features:
                raise ValueError(f"codes have n_atoms={l}, the model expects {n_features} "
                                 "features")
            if idx.size and (idx.min() < -1 or idx.max() >= l):
                raise ValueError(f"codes' indices must be in [-1, {l}), got values in "
                                 f"[{idx.min()}, {idx.max()}]")
            narrow = train and idx.dtype in (np.int8, np.int16)
            idx = np.ascontiguousarray(idx, idx.dtype if narrow else np.int32)
            # the padding's values must read 0; codes whose padding already does (a window's,
            # an encoder's) are used as they are (read only here), else one zeroed copy
            pad = idx < 0
            if pad.any() and np.any(vals[pad] != 0):
                vals = np.where(pad, 0, vals).astype(dtype, copy=False)
            # no padded-index copy of the whole data (n x k intp): training pads each
            # mini-batch's indices (Trainer), other uses build it on demand
            codes = SparseCodes(idx, np.ascontiguousarray(vals, dtype), l)
            return codes, idx.shape[0], l, True
        if hasattr(X, "tocsr") or hasattr(X, "todense"):
            raise TypeError(f"sparse input is not supported ({type(X).__name__}); pass a dense "
                            "array (X.toarray()) or tinydl.omp.SparseCodes")
        arr = np.asarray(X)
        if arr.ndim == 1:
            raise ValueError(f"Expected a 2-D X (n_samples, n_features), got shape {arr.shape}. "
                             "Reshape your data: x.reshape(1, -1) for a single sample")
        if arr.dtype.kind == "O":
            arr = arr.astype(np.float64)  # numbers held as objects; strings fail here
        if arr.ndim == 2 and arr.shape[0] and arr.shape[1] == 0:
            raise ValueError(f"0 feature(s) (shape={arr.shape}) while a minimum of 1 is "
                             "required.")
        # fast path: data already in the model's dtype is checked with one float64 sum (a NaN
        # or Inf makes it non-finite) instead of an n x m boolean mask
        if arr is not None and arr.dtype == dtype and arr.ndim == 2 and arr.size \
                and arr.flags.c_contiguous \
                and np.isfinite(np.add.reduce(arr, axis=None, dtype=np.float64)):
            if n_features is not None and arr.shape[1] != n_features:
                raise ValueError(f"X has {arr.shape[1]} features, but {type(self).__name__} "
                                 f"is expecting {n_features} features as input")
        else:
            try:
                arr = check_array(arr, "X", dtype=dtype, n_features=n_features,
                                  owner=type(self).__name__)
            except TypeError as exc:
                if arr.dtype.kind == "c":  # sklearn's convention: a ValueError
                    raise ValueError(f"Complex data not supported: {exc}") from None
                raise
        return arr, arr.shape[0], arr.shape[1], False

    def _check_y(self, y, n):
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y "
                             "is None")
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected; "
                          "flattened to shape (n_samples,)",
                          conversion_warning(), stacklevel=3)
            y = y.ravel()
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D (n_samples,), got shape {y.shape}")
        if y.shape[0] != n:
            raise ValueError(f"X has {n} samples but y has {y.shape[0]}; they must match (one "
                             "label per sample)")
        if y.dtype.kind == "f":
            if not np.isfinite(y).all():
                raise ValueError("y contains NaN or Inf")
            if np.any(y != np.round(y)):
                raise ValueError("Unknown label type: continuous targets; a classifier needs "
                                 "discrete class labels")
        if y.dtype.kind in "cOV" and y.dtype.kind != "O":
            raise ValueError(f"y must hold class labels, got dtype {y.dtype}")
        return y

    def _encode(self, y):
        """Class indices of ``y`` in ``classes_``; a label outside them is an error."""
        enc = np.searchsorted(self.classes_, y)
        np.minimum(enc, len(self.classes_) - 1, out=enc)
        bad = self.classes_[enc] != y
        if bad.any():
            unknown = np.unique(y[bad])[:5]
            raise ValueError(f"y contains label(s) {unknown.tolist()} not in classes "
                             f"{self.classes_.tolist()[:20]}; pass every class in `classes` "
                             "on the first partial_fit call")
        return enc.astype(np.intp, copy=False)


class Trainer:
    """Mini-batch passes over validated data (mixed into the classifiers)."""

    def _batch_buffers(self, sparse, data, m):
        b, dt = self.batch_size, self.network_.dtype
        key = (b, sparse, m if not sparse else (data.k, data.n_atoms, data.indices.dtype), dt)
        if getattr(self, "_bufkey", None) != key:
            if sparse:
                codes = SparseCodes(np.empty((b, data.k), np.int32),
                                    np.empty((b, data.k), dt), data.n_atoms)
                codes.padded_indices()  # the padded-index buffer, gathered into per batch
                self._bufs = {"codes": codes, "y": np.empty(b, np.intp)}
                if data.indices.dtype != np.int32:  # compact indices: gathered here first
                    self._bufs["stage"] = np.empty((b, data.k), data.indices.dtype)
            else:
                self._bufs = {"X": np.empty((b,) + self.network_.input_shape, dt),
                              "y": np.empty(b, np.intp)}
            self._bufkey = key
        return self._bufs

    #: Optional data-parallel gradient hook (public; :mod:`tinydl.distributed` sets it);
    #: ``None`` costs nothing.  An object with ``select(rows) -> rows`` (this process's
    #: share of a mini-batch's rows) and ``reduce(grads, loss, nb) -> (loss, nb)`` (called
    #: after backward, before the optimizer step: combines the shares' gradients in place and
    #: returns the whole mini-batch's mean loss and size), so every process takes the same
    #: step.
    grad_hook = None

    def _train(self, data, yenc, n, sparse, epochs, rows=None):
        net = self.network_
        hook = self.grad_hook
        b = self.batch_size
        first = net.layers[0]
        if sparse and isinstance(first, Dense) and self.sparse_product != "auto":
            # before the workspaces: a "gather" layer allocates no scatter block
            first.sparse_product = self.sparse_product
        net.ensure(b, sparse)
        ws = getattr(self.loss_fn_, "ws", None)
        if ws is None or ws["grad"].shape[0] < b:
            self.loss_fn_.prepare(b, len(self.classes_), net.dtype)
        bufs = self._batch_buffers(sparse, data, self.n_features_in_)
        # seeded by the passes run so far (not the curve's length: a bounded curve stops
        # growing, the count does not)
        rng = np.random.default_rng([self.seed, self.n_epochs_])
        # the samples a pass visits: all, or the given rows of the data (a reservoir
        # window's occupied slots: no copy of the window gathered first)
        order = np.arange(n) if rows is None else np.array(rows, np.intp)
        n = len(order)
        loss_fn, opt = self.loss_fn_, self.optimizer_
        params, grads = net.params, net.grads
        fused = self._fused_step(net, opt, hook)
        for epoch in range(epochs):
            rng.shuffle(order)
            total = 0.0
            for s in range(0, n, b):
                rows = order[s:s + b]
                if hook is not None:
                    rows = hook.select(rows)
                nb = rows.shape[0]
                yb = bufs["y"][:nb]
                # mode="clip" (rows are valid): with out= and the default mode="raise",
                # NumPy gathers into a temporary of the batch's size and copies it over
                np.take(yenc, rows, out=yb, mode="clip")
                if sparse:
                    xb = bufs["codes"].rows(0, nb)  # views of the buffers, padding included
                    stage = bufs.get("stage")
                    if stage is None:
                        np.take(data.indices, rows, axis=0, out=xb.indices, mode="clip")
                    else:  # take's out= must have the data's dtype: widened after
                        np.take(data.indices, rows, axis=0, out=stage[:nb], mode="clip")
                        np.copyto(xb.indices, stage[:nb])
                    np.take(data.values, rows, axis=0, out=xb.values, mode="clip")
                    # the batch's padded indices, from its own (the padding to column
                    # n_atoms, as SparseCodes.padded_indices)
                    pb = xb.padded_indices()
                    np.copyto(pb, xb.indices)
                    np.copyto(pb, data.n_atoms, where=xb.indices < 0)
                    if self.sparse_product == "auto" and not getattr(self, "_sp_chosen", False):
                        net.choose_sparse_product(xb)
                        self._sp_chosen = True
                else:
                    xb = bufs["X"][:nb]
                    np.take(data.reshape((n,) + net.input_shape), rows, axis=0, out=xb,
                            mode="clip")
                out = net.forward(xb, train=True)
                loss, dout = loss_fn(out.reshape(nb, -1), yb)
                if not np.isfinite(loss):
                    self._diverged(f"loss {loss}", epoch, s)
                if opt.grad_scale != 1.0:
                    dout *= opt.grad_scale  # SGD takes lr * gradient (see optim.SGD)
                # fused: the large weights' gradient GEMMs are left pending (their operands
                # kept) and run only after the check below, straight into the velocity
                net.backward(dout, defer_weights=fused)
                if hook is not None:
                    loss, nb = hook.reduce(grads, loss, nb)
                # every gradient flows through the bias gradients (sums of each layer's dy):
                # checking them is cheap where a pass over all parameters is not
                if not net.bias_grads_finite():
                    if fused:
                        net.discard_weight_grads()
                    self._diverged("a non-finite gradient", epoch, s)
                if fused:
                    opt.step_deferred(params, grads, net)
                else:
                    opt.step(params, grads)
                total += loss * nb
                self.t_ += 1
            self.loss_curve_.append(total / n)
            self.n_epochs_ += 1
            keep = self.loss_curve_len
            if keep is not None and len(self.loss_curve_) > keep:
                del self.loss_curve_[:len(self.loss_curve_) - keep]

    @staticmethod
    def _fused_step(net, opt, hook) -> bool:
        """Whether to train with the fused momentum-SGD step (``SGD.step_deferred``): SGD
        with momentum, no data-parallel hook (it all-reduces plain gradients), a backend
        whose ``gemm`` is one in-place BLAS call, and weights large enough to gain."""
        return (hook is None and isinstance(opt, SGD) and opt.momentum > 0
                and getattr(net.backend, "fused_gemm", False)
                and net.deferred_weights() > 0)

    def _diverged(self, what, epoch, start):
        raise DivergenceError(
            f"training diverged: {what} at epoch {epoch + 1}, batch starting at sample {start} "
            f"(learning_rate={self.learning_rate}, optimizer={self.optimizer!r}); the weights "
            "are those of the last finite step: lower learning_rate or scale X")

