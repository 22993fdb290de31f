"""The learner's execution phase for one sample, on buffers prepared once.

A device classifies each sample as it arrives: standardize, code by OMP on the dictionary,
run the network.  :class:`TinyDLClassifier.predict <tinydl.learner.TinyDLClassifier>` on a
batch validates and converts ``X``, allocates the standardized copy, the codes and the network's
output; for one sample those allocations and the layers' generic dispatch cost more than the
arithmetic.  :class:`OneSample` holds, for the learner's current state:

* ``x`` (1, n_features): the standardized row (``(x - mean) / scale``, the same two NumPy
  calls as :func:`tinydl.standardize.apply_stats`, written into the buffer);
* ``indices`` / ``values`` (1, kc), int32 and the model's dtype: the codes, written by
  :meth:`StreamingDictionary.transform_into <tinydl.transform.StreamingDictionary.transform_into>`
  and scaled in place by the learner's code scale;
* the network's one-sample plan for compact codes (:class:`tinydl.nn.infer.RowPlan`: the
  first layer's bound gather kernel, or for the "dense" first-layer product of the
  small-memory plans the codes scattered into a row of its own and one product, then the
  small dense layers on buffers of their own).

Validation stays and is cheap: a row that is not one C-contiguous sample of the model's dtype
and width takes the batch path (which converts it or raises naming the problem); a NaN or Inf
(kept by the standardization) is refused by ``transform_into``'s own check, and the batch
path then raises its message about ``X``.  Nothing of the learner's state is written, so a
failed call leaves the model as it was.

Results: the same codes and the same network outputs, bit for bit, as the batch path on that
one row (the same operations in the same order: see :mod:`tinydl.nn.infer`); rows of a
multi-row batch may differ in the last bits of the outputs (BLAS ``?gemm`` against one row's
``?gemv`` in the dense layers), the codes not at all.

On a backend with a fused one-sample predict (the native backend's ``prepare_predict``:
``hal/backends/native/predict.c``; also ``blas`` and the other ``compiled_execution``
backends where the native kernels build, see :mod:`hal.execution`), :meth:`OneSample.predict`
is one kernel call: the
finiteness check, this standardization, the transform's encode (the same kernels as
``transform_into``), the code scale, the network's layers and the argmax.  Its codes are the
same bits as above (written into ``indices`` / ``values``); its outputs agree with
:meth:`OneSample.outputs` to rounding (the dense layers after the first sum in input order,
tanh is libm's: within 1e-5 of the largest output's size in float32, tested), so its label
is ``outputs``' argmax except on a tie within rounding.  ``outputs`` (``predict_proba``,
``decision_function``) keeps the bit-identical path above.  The learner's ``predict`` of
one sample first tries :attr:`OneSample.fast`: the same kernel call in one Python frame (the
checks of :meth:`OneSample.valid_for` and :meth:`OneSample.predict` written out, the
kernel's two-argument ``predict1b``).

The buffers belong to one state: :meth:`OneSample.valid_for` compares the objects they were
made from (the network, the transform and its prepared execution state, the standardization
statistics, which a rebuild or a load replaces) and the learner makes a new one when any
changed.  The learner prepares it at the end of ``fit``, after each ``partial_fit`` that
updated the network and on ``load``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .nn.infer import layer_specs

__all__ = ["OneSample", "OneSamplePath", "prepare_one_sample"]


class OneSample:
    """Buffers and plans for one-sample prediction with a fitted learner.

    Parameters
    ----------
    learner : TinyDLClassifier
        Trained (at least one network update), statistics fixed.
    plan : RowPlan
        The network's one-sample plan for compact codes.

    Attributes
    ----------
    x : ndarray of shape (1, n_features) or None
        The standardized row (None when standardization is off: the input row is coded as
        it is).
    indices, values : ndarray of shape (1, kc)
        The row's compact codes.
    labels : ndarray of shape (n_outputs,)
        The label of each network output.
    nbytes : int
        Bytes of the buffers (the plan's included).
    """

    def __init__(self, learner, plan):
        std = learner.standardizer_
        tr = learner.transform_
        dt = np.dtype(learner.dtype)
        m = int(learner.n_features_in_)
        self.clf, self.net, self.transform, self.std = (learner.network_,
                                                        learner.network_.network_, tr, std)
        self.mean, self.scale = (std.mean_, std.scale_) if std.enabled else (None, None)
        self.m, self.dtype = m, dt
        # the standardized row's buffer is made on first use (see x): a learner prepares this
        # path after every network update while it streams, and a stream need not hold it
        self._x = None
        kc = min(int(tr.k), int(tr.l))
        self.indices = np.full((1, kc), -1, np.int32)
        self.values = np.zeros((1, kc), dt)
        self.code_scale = learner._code_scale
        self.plan = plan
        self.labels = learner.classes_[np.asarray(learner.network_.classes_, np.intp)]
        # each output's label as a one-element array: predict returns a copy of one
        self.labels1 = [self.labels[j:j + 1] for j in range(len(self.labels))]
        self.shape = (1, m)
        self.fused, self._into = self._fuse(learner, kc)
        self.fast = None if self.fused is None else self._bind_fast()
        self.nbytes = int(sum(a.nbytes for a in (self.indices, self.values))
                          + (0 if self.mean is None else m * dt.itemsize) + plan.nbytes
                          + (0 if self.fused is None else self.fused.nbytes))

    @property
    def x(self) -> Optional[np.ndarray]:
        """The standardized row's buffer (1, n_features), made on first use; None when
        standardization is off."""
        if self._x is None and self.mean is not None:
            self._x = np.zeros(self.shape, self.dtype)
        return self._x

    def _fuse(self, learner, kc):
        """The backend's fused one-sample predict (``prepare_predict``: the native backend's
        one kernel call for the standardization, the codes, the code scale, the network and
        the argmax) with the transform's execution state it was made for; (None, None) where
        the backend has none or the network has a layer it does not run."""
        from hal.execution import execution_backend  # blas: the native kernels (the rule)
        prepare = getattr(execution_backend(self.net.backend), "prepare_predict", None)
        specs = layer_specs(self.net) if prepare is not None else None
        if specs is None or (self.mean is not None and (
                self.mean.dtype != self.dtype or self.scale.dtype != self.dtype)):
            return None, None
        into = self.transform._prepare_into()  # kept by the transform: a change replaces it
        if into[6] is None or into[2] != kc:
            return None, None
        self.fused_specs = specs
        fused = prepare(into[6], self.mean, self.scale, self.code_scale, specs)
        return (None, None) if fused is None else (fused, into)

    def _bind_fast(self):
        """:meth:`predict` on the fused kernel for the learner it was made for, in one
        Python frame: ``fast(learner, X)`` returns the label, shape (1,), or None where
        :meth:`valid_for` or :meth:`predict` would not take ``X`` (the learner's other
        paths then run).  The checks of both, written out, and the kernel call with the
        codes' arrays bound (``predict1b``)."""
        fn, b, xt, rfb, p = self.fused.kernel(self.indices, self.values)
        ndarray, shape, dt, labels1 = np.ndarray, self.shape, self.dtype, self.labels1
        clf0, net, tr, std, mean, into = (self.clf, self.net, self.transform, self.std,
                                          self.mean, self._into)
        params, gather = self.plan.params, self.plan.sparse_input
        l, k, m = self.fused.l, self.fused.k, self.fused.m

        def fast(learner, X):
            if type(X) is not ndarray or X.dtype is not dt or X.shape != shape:
                return None
            d = learner.__dict__
            try:  # valid_for's identities (a KeyError: not trained, the checked path says)
                if d["network_"] is not clf0 or d["transform_"] is not tr \
                        or d["standardizer_"] is not std or not d["n_updates_"] \
                        or clf0.network_ is not net or net.params is not params \
                        or (mean is not None and std.mean_ is not mean) \
                        or tr.__dict__.get("_into") is not into \
                        or (gather and net.layers[0].sparse_product != "gather"):
                    return None
            except KeyError:
                return None
            try:  # the row's pointer: cffi refuses an array that is not C-contiguous
                x = rfb(xt, X, False)
            except (ValueError, BufferError):
                return None
            j = fn(b, x)  # -1: a NaN or Inf (the batch path says)
            if j < 0:
                return None
            if p.dep:
                from hal.backends.numpy.omp import warn_stopped_early
                warn_stopped_early(1, 1, l, k, m)
            return labels1[j].copy()
        return fast

    def valid_for(self, learner) -> bool:
        """Whether these buffers still describe ``learner``'s state."""
        clf = learner.network_
        return (clf is self.clf and clf.network_ is self.net
                and learner.transform_ is self.transform
                and learner.standardizer_ is self.std
                and (self.mean is None or self.std.mean_ is self.mean)
                and self.plan.valid_for(self.net)
                and (self._into is None or self.transform.__dict__.get("_into") is self._into))

    def outputs(self, X) -> Optional[np.ndarray]:
        """The network's outputs (1, n_outputs) for one raw sample ``X`` (1, n_features), a
        view of the plan's buffer (overwritten by the next call); None when ``X`` is not one
        finite C-contiguous row of the model's dtype and width (the caller takes the batch
        path, which converts it or raises)."""
        if type(X) is not np.ndarray or X.shape != self.shape or X.dtype != self.dtype \
                or not X.flags.c_contiguous:
            return None
        x = self.x
        if x is None:
            x = X
        else:
            np.subtract(X, self.mean, out=x)
            np.divide(x, self.scale, out=x)
        try:
            # transform_into refuses a NaN or Inf (standardization keeps them, and a finite
            # row that overflows there is refused by the batch path's transform too)
            self.transform.transform_into(x, self.indices, self.values)
        except ValueError:
            return None  # the batch path checks X again and raises naming the problem
        np.multiply(self.values, self.code_scale, out=self.values)
        return self.plan.run_codes(self.indices, self.values)

    def predict(self, X) -> Optional[np.ndarray]:
        """The label of one raw sample, shape (1,) (a new array), or None as
        :meth:`outputs`."""
        f = self.fused
        if f is None:
            z = self.outputs(X)
            return None if z is None else self.labels1[z.argmax()].copy()
        if type(X) is not np.ndarray or X.shape != self.shape or X.dtype != self.dtype \
                or not X.flags.c_contiguous:
            return None
        j = f.predict(X, self.indices, self.values)  # -1: a NaN or Inf (the batch path says)
        return None if j < 0 else self.labels1[j].copy()


def prepare_one_sample(learner) -> Optional[OneSample]:
    """A :class:`OneSample` for the learner's current state, or None when it cannot run one
    (not trained yet, statistics not fixed, a network the one-sample plan does not run)."""
    if not hasattr(learner, "network_") or getattr(learner, "n_updates_", 0) == 0 \
            or not hasattr(learner.network_, "network_"):
        return None
    std = learner.standardizer_
    if std.enabled and std.mean_ is None:
        return None
    plan = learner.network_.network_.row_plan(True)
    if plan is None:
        return None
    return OneSample(learner, plan)


class OneSamplePath:
    """The one-sample side of :class:`~tinydl.learner.TinyDLClassifier` (a mixin before
    :class:`~tinydl.marks.MarkedStream`): the prepared :class:`OneSample` in ``_row``, made
    at the end of the stream (:meth:`finish`), after updates and loads (the learner calls
    :meth:`_prepare_row`), or on first use when the state changed."""

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_row", None)  # bound to this object's buffers: prepared again on use
        return state

    def finish(self):
        """End of the stream (see :meth:`MarkedStream.finish
        <tinydl.marks.MarkedStream.finish>`), then the one-sample buffers are prepared for
        the final state.  Returns ``self``."""
        super().finish()
        self._prepare_row()
        return self

    def _prepare_row(self, streaming: bool = False) -> Optional[OneSample]:
        """Prepare the one-sample prediction path for the current state; None when it
        cannot run yet.

        ``streaming`` (after an update inside ``partial_fit``): a network whose first layer
        takes compact codes by the "dense" product (the small-memory plans') gets its path
        on first use instead (:meth:`_one_sample`), at :meth:`finish` and on load: the
        plan's footprint prices the stream, and its buffers and objects (about 5.6 KB for
        UJIIndoorLoc's 256 KiB plan, measured with tracemalloc) are not made while a
        learner only learns."""
        if streaming and getattr(self.network_.network_.layers[0], "sparse_product",
                                 None) == "dense":
            self.__dict__["_row"] = None  # the last state's: made again on first use
            return None
        row = self.__dict__["_row"] = prepare_one_sample(self)
        return row

    def _one_sample(self, X) -> Optional[OneSample]:
        """The prepared :class:`OneSample` when ``X`` is one row of a NumPy array (made
        again if the state changed), else None."""
        if type(X) is not np.ndarray or X.ndim != 2 or X.shape[0] != 1:
            return None
        row = self.__dict__.get("_row")
        if row is None or not row.valid_for(self):
            row = self._prepare_row()
        return row

    def _row_outputs(self, X) -> Optional[np.ndarray]:
        """The network's outputs for one sample through the prepared buffers (a view,
        overwritten by the next call), or None: not one finite C-contiguous row of the
        model's dtype and width (the batch path converts it or raises)."""
        row = self._one_sample(X)
        return None if row is None else row.outputs(X)
