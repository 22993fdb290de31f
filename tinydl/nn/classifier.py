"""Classifiers with scikit-learn's conventions on top of :class:`~tinydl.nn.network.Network`.

* :class:`MLPClassifier`: dense layers (the TinyDL paper's network on codes or raw features);
* :class:`CNNClassifier`: 1-D or 2-D convolution and pooling blocks, then dense layers.

Both train by mini-batch SGD with momentum (the paper's) or Adam, on the L2 loss (the paper's)
or softmax cross-entropy; ``partial_fit`` continues from the current weights (the paper's
update every n_batch samples).  Input ``X`` is a dense array or compact codes
(:class:`tinydl.omp.SparseCodes`).  Models are saved to ``.npz`` atomically, never pickled.
"""
from __future__ import annotations

import json
import warnings
from typing import Dict, List, Optional

import numpy as np

from .._validation import check_array
from ..errors import (DataConversionWarning, DivergenceError, ModelFileError, NotFittedError,
                      not_fitted_error)
from ..io import array_digest, load_npz, save_npz, verify_digest
from .layers import (Conv1D, Conv2D, Dense, Dropout, MaxPool1D, MaxPool2D, ReLU, Sigmoid,
                     SparseBatch, Tanh, layer_from_config)
from .losses import LOSSES, softmax
from .network import Network
from .optim import OPTIMIZERS, SGD

__all__ = ["NetworkClassifier", "MLPClassifier", "CNNClassifier", "DivergenceError",
           "NotFittedError", "DataConversionWarning"]

_ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid}
_FILE_KIND = "tinydl.nn.classifier"


def _check_param(name, value, kind, low=None, high=None, choices=None, low_open=False):
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


class NetworkClassifier:
    """Shared machinery; subclasses define the layers in :meth:`_make_layers`.

    Parameters common to every subclass: ``loss`` ("l2" or "cross_entropy"), ``optimizer``
    ("sgd" or "adam"), ``learning_rate``, ``momentum`` (SGD), ``batch_size``, ``epochs`` (of
    ``fit``; ``partial_fit`` makes one pass), ``seed`` (weights, shuffling and dropout),
    ``dtype`` ("float32" or "float64"), ``backend`` (a hal backend name or object, default
    NumPy) and ``sparse_product`` ("auto", "gather" or "dense": the first layer's product for
    compact-code input; "auto" times both on the first batch and keeps the faster).
    """

    # -- sklearn plumbing ---------------------------------------------------------------
    _param_names: tuple = ()

    def get_params(self, deep=True) -> Dict:
        return {name: getattr(self, name) for name in self._param_names}

    def set_params(self, **params):
        for name, value in params.items():
            if name not in self._param_names:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; "
                                 f"valid: {', '.join(self._param_names)}")
            setattr(self, name, value)
        return self

    def __repr__(self):
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._param_names)
        return f"{type(self).__name__}({args})"

    def __sklearn_tags__(self):  # scikit-learn >= 1.6 asks estimators for their tags
        from sklearn.utils import ClassifierTags, Tags, TargetTags
        tags = Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags())
        return tags

    _estimator_type = "classifier"

    # -- validation ---------------------------------------------------------------------
    def _validate_params(self):
        _check_param("loss", self.loss, None, choices=set(LOSSES))
        _check_param("optimizer", self.optimizer, None, choices=set(OPTIMIZERS))
        _check_param("learning_rate", self.learning_rate, "float", low=0, low_open=True)
        _check_param("momentum", self.momentum, "float", low=0, high=1)
        _check_param("batch_size", self.batch_size, "int", low=1)
        _check_param("epochs", self.epochs, "int", low=1)
        _check_param("seed", self.seed, "int", low=0)
        _check_param("dtype", str(np.dtype(self.dtype)) if self.dtype is not None else None,
                     None, choices={"float32", "float64"})
        _check_param("sparse_product", self.sparse_product, None,
                     choices={"auto", "gather", "dense"})
        if hasattr(self, "dropout"):
            _check_param("dropout", self.dropout, "float", low=0, high=1)
            if self.dropout >= 1:
                raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if hasattr(self, "activation"):
            _check_param("activation", self.activation, None, choices=set(_ACTIVATIONS))

    def _check_X(self, X, n_features=None):
        """Dense rows (n, n_features) in the model's dtype, or a :class:`SparseBatch`-ready
        tuple for compact codes; returns (data, n_samples, n_features, is_sparse)."""
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
            idx = np.ascontiguousarray(idx, np.int32)
            vals = np.where(idx >= 0, vals, 0).astype(dtype)
            dense_idx = np.where(idx >= 0, idx, l).astype(np.intp)
            return (idx, vals, dense_idx, l), idx.shape[0], l, True
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
                raise ValueError(f"X has {arr.shape[1]} features, expected {n_features}")
        else:
            try:
                arr = check_array(arr, "X", dtype=dtype, n_features=n_features)
            except TypeError as exc:
                if arr.dtype.kind == "c":  # sklearn's convention: a ValueError
                    raise ValueError(f"Complex data not supported: {exc}") from None
                raise
        return arr, arr.shape[0], arr.shape[1], False

    @staticmethod
    def _check_y(y, n):
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected; "
                          "flattened to shape (n_samples,)",
                          DataConversionWarning, stacklevel=3)
            y = y.ravel()
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D (n_samples,), got shape {y.shape}")
        if y.shape[0] != n:
            raise ValueError(f"X has {n} samples but y has {y.shape[0]}; they must match")
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

    # -- building ------------------------------------------------------------------------
    def _make_layers(self, n_features, n_classes) -> List:
        raise NotImplementedError

    def _input_shape(self, n_features):
        return (n_features,)

    def _build(self, n_features, n_classes):
        self._validate_params()
        layers = self._make_layers(n_features, n_classes)
        self.network_ = Network(layers, self._input_shape(n_features), self.dtype, self.backend,
                                self.seed)
        self._init_optimizer()
        self.n_features_in_ = n_features
        self.n_params_ = self.network_.n_params
        self.loss_curve_ = []
        self.t_ = 0

    def _init_optimizer(self):
        kw = {"momentum": self.momentum} if self.optimizer == "sgd" else {}
        self.optimizer_ = OPTIMIZERS[self.optimizer](self.learning_rate, **kw)
        self.optimizer_.prepare(self.network_.n_params, self.network_.dtype)
        self.loss_fn_ = LOSSES[self.loss]()

    # -- training ------------------------------------------------------------------------
    def fit(self, X, y):
        """Train from freshly initialised weights for ``epochs`` passes over ``(X, y)``.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features), or SparseCodes
        y : array-like of shape (n_samples,)

        Returns
        -------
        self
        """
        self._validate_params()
        data, n, m, sparse = self._check_X(X)
        y = self._check_y(y, n)
        self.classes_ = np.unique(y)
        yenc = self._encode(y)
        self._build(m, len(self.classes_))
        self._train(data, yenc, n, sparse, self.epochs)
        return self

    def partial_fit(self, X, y, classes=None, epochs=1):
        """Passes over ``(X, y)`` continuing from the current weights (and optimizer state).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features), or SparseCodes
        y : array-like of shape (n_samples,)
        classes : array-like of shape (n_classes,), optional
            Every class the model will see; required on the first call.
        epochs : int, default=1
            Passes over ``(X, y)``; ``X`` is validated and converted once for all of them.
            The same model as ``epochs`` calls with one pass each (each pass shuffles with
            its own seed, from the number of passes made so far).

        Returns
        -------
        self
        """
        _check_param("epochs", epochs, "int", low=1)
        first = not hasattr(self, "network_")
        data, n, m, sparse = self._check_X(X, None if first else self.n_features_in_)
        y = self._check_y(y, n)
        if first:
            if classes is None:
                raise ValueError("classes must be given on the first call to partial_fit "
                                 "(every label the model will ever see)")
            self.classes_ = np.unique(np.asarray(classes))
            yenc = self._encode(y)
            self._build(m, len(self.classes_))
        else:
            if classes is not None and not np.array_equal(np.unique(np.asarray(classes)),
                                                          self.classes_):
                raise ValueError(f"classes={np.asarray(classes).tolist()} differs from the "
                                 f"classes of the first call {self.classes_.tolist()}")
            yenc = self._encode(y)
        for _ in range(int(epochs)):
            self._train(data, yenc, n, sparse, 1)
        return self

    def _batch_buffers(self, sparse, data, m):
        b, dt = self.batch_size, self.network_.dtype
        key = (b, sparse, m if not sparse else data[0].shape[1], dt)
        if getattr(self, "_bufkey", None) != key:
            if sparse:
                k = data[0].shape[1]
                self._bufs = {"idx": np.empty((b, k), np.int32), "val": np.empty((b, k), dt),
                              "didx": np.empty((b, k), np.intp), "y": np.empty(b, np.intp)}
            else:
                self._bufs = {"X": np.empty((b,) + self.network_.input_shape, dt),
                              "y": np.empty(b, np.intp)}
            self._bufkey = key
        return self._bufs

    #: Optional data-parallel gradient hook (public; :mod:`tinydl.distributed` sets it);
    #: ``None`` costs nothing.  An object with ``select(rows) -> rows`` (this process's share of a mini-batch's rows)
    #: and ``reduce(grads, loss, nb) -> (loss, nb)`` (called after backward, before the
    #: optimizer step: combines the shares' gradients in place and returns the whole
    #: mini-batch's mean loss and size), so every process takes the same step.
    grad_hook = None

    def _train(self, data, yenc, n, sparse, epochs):
        net = self.network_
        hook = self.grad_hook
        b = self.batch_size
        net.ensure(b, sparse)
        ws = getattr(self.loss_fn_, "ws", None)
        if ws is None or ws["grad"].shape[0] < b:
            self.loss_fn_.prepare(b, len(self.classes_), net.dtype)
        bufs = self._batch_buffers(sparse, data, self.n_features_in_)
        rng = np.random.default_rng([self.seed, len(self.loss_curve_)])
        order = np.arange(n)
        loss_fn, opt = self.loss_fn_, self.optimizer_
        params, grads = net.params, net.grads
        first = net.layers[0]
        if sparse and isinstance(first, Dense) and self.sparse_product != "auto":
            first.sparse_product = self.sparse_product
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
                    idx, val, didx = bufs["idx"][:nb], bufs["val"][:nb], bufs["didx"][:nb]
                    np.take(data[0], rows, axis=0, out=idx, mode="clip")
                    np.take(data[1], rows, axis=0, out=val, mode="clip")
                    np.take(data[2], rows, axis=0, out=didx, mode="clip")
                    xb = SparseBatch(idx, val, didx, data[3])
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

    # -- inference -----------------------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "network_"):
            raise not_fitted_error(f"this {type(self).__name__} is not fitted yet: call fit or "
                                 "partial_fit first")

    def decision_function(self, X):
        """Raw network outputs, shape (n_samples, n_classes); for two classes, as scikit-learn
        expects, the margin ``z_1 - z_0`` of shape (n_samples,) (positive: ``classes_[1]``)."""
        z = self._outputs(X)
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def _outputs(self, X):
        self._check_fitted()
        data, n, _, sparse = self._check_X(X, self.n_features_in_)
        net = self.network_
        b = max(self.batch_size, 1)
        net.ensure(b, sparse)
        out = np.empty((n, len(self.classes_)), net.dtype)
        for s in range(0, n, b):
            e = min(n, s + b)
            if sparse:
                xb = SparseBatch(data[0][s:e], data[1][s:e], data[2][s:e], data[3])
            else:
                xb = data[s:e].reshape((e - s,) + net.input_shape)
            out[s:e] = net.forward(xb, train=False).reshape(e - s, -1)
        return out

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes): the softmax of the outputs.  For the
        L2 loss the outputs estimate the one-hot targets; their softmax keeps their order
        (and so ``predict``) but is a normalised score, not a calibrated probability."""
        return softmax(self._outputs(X))

    def predict(self, X):
        """Predicted labels, shape (n_samples,)."""
        z = self._outputs(X)
        return self.classes_[np.argmax(z, axis=1)]

    def score(self, X, y):
        """Mean accuracy on ``(X, y)``."""
        y = self._check_y(y, self._check_X(X, getattr(self, "n_features_in_", None))[1])
        return float(np.mean(self.predict(X) == y))

    def __getstate__(self):
        # the mini-batch buffers are scratch; dropping them keeps copies small
        state = dict(self.__dict__)
        state.pop("_bufs", None)
        state.pop("_bufkey", None)
        return state

    # -- memory --------------------------------------------------------------------------
    def footprint(self, batch_size=None, n_features=None, n_classes=None, n_samples=0,
                  sparse_k=None) -> Dict[str, int]:
        """Bytes a training run will hold, computed before it starts.

        Parameters
        ----------
        batch_size, n_features, n_classes : int, optional
            Default to the fitted model's (``batch_size`` to the parameter).
        n_samples : int
            Training samples: adds the shuffled order and the encoded labels (8 bytes each).
        sparse_k : int, optional
            For compact-code input with ``k`` non-zeros per sample.

        Returns
        -------
        dict
            ``parameters``, ``gradients``, ``optimizer``, ``activations`` (every layer's
            forward/backward buffers and the loss's), ``batch`` (the mini-batch copy),
            ``labels`` and ``total``.
        """
        b = int(batch_size or self.batch_size)
        if n_features is None or n_classes is None:
            self._check_fitted()
            net = self.network_
        else:
            self._validate_params()
            net = Network(self._make_layers(int(n_features), int(n_classes)),
                          self._input_shape(int(n_features)), self.dtype, "numpy", self.seed)
        it = net.dtype.itemsize
        c = int(np.prod(net.output_shape))
        loss_ws = b * c * it + b * 8 * 2 + b * it * 2  # grad, flat/rows, picked, red
        sparse = sparse_k is not None
        if sparse:
            batch = b * int(sparse_k) * (4 + it + 8) + b * 8
        else:
            batch = b * int(np.prod(net.input_shape)) * it + b * 8
        fp = {"parameters": net.params.nbytes, "gradients": net.grads.nbytes,
              "optimizer": OPTIMIZERS[self.optimizer].state_bytes(net.n_params, it),
              "activations": net.workspace_bytes(b, sparse) + loss_ws,
              "batch": batch, "labels": 16 * int(n_samples)}
        fp["total"] = int(sum(fp.values()))
        return fp

    # -- persistence ---------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the model (parameters, optimizer state, classes, settings) to ``.npz``
        atomically, with a SHA-256 of the arrays so a tampered file is refused on load."""
        self._check_fitted()
        classes = np.asarray(self.classes_)
        if classes.dtype.kind == "O":
            classes = classes.astype(str)
        net = self.network_
        meta = {"class": type(self).__name__, "params": self.get_params(),
                "layers": [[la.kind, la.config()] for la in net.layers],
                "input_shape": list(net.input_shape), "n_features_in": self.n_features_in_,
                "t": self.t_, "opt_t": self.optimizer_.t,
                "rng": net.rng.bit_generator.state, "loss_curve": self.loss_curve_}
        meta["params"]["backend"] = None  # a backend object is not data
        arrays = {"params": net.params, "classes": classes,
                  "meta": np.array(json.dumps(meta, default=_json_default))}
        for name, arr in self.optimizer_.state.items():
            arrays["opt_" + name] = arr
        arrays["sha256"] = np.array(array_digest(arrays))
        save_npz(path, arrays, kind=_FILE_KIND)

    @classmethod
    def load(cls, path, backend=None):
        """Read a model written by :meth:`save`.

        Raises
        ------
        tinydl.io.ModelFileError
            If the file is truncated, corrupt, tampered with or not a classifier.
        """
        data = load_npz(path, _FILE_KIND, required=("params", "classes", "meta", "sha256"))
        verify_digest(data, path)
        try:
            meta = json.loads(str(data["meta"]))
            klass = {"MLPClassifier": MLPClassifier, "CNNClassifier": CNNClassifier}[
                meta["class"]]
            params = dict(meta["params"])
            params["backend"] = backend
            params["hidden_layer_sizes"] = tuple(params.get("hidden_layer_sizes", ()))
            if "conv_layers" in params:
                params["conv_layers"] = tuple(tuple(c) for c in params["conv_layers"])
                params["input_shape"] = tuple(params["input_shape"])
            model = klass(**{k: v for k, v in params.items() if k in klass._param_names})
            layers = [layer_from_config(kind, cfg) for kind, cfg in meta["layers"]]
            model._validate_params()
            net = Network(layers, meta["input_shape"], model.dtype, backend, model.seed)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: malformed model description ({exc})") from None
        if data["params"].shape != (net.n_params,):
            raise ModelFileError(f"{path}: {data['params'].shape} parameters stored, the "
                                 f"architecture needs ({net.n_params},)")
        net.params[...] = data["params"]
        try:  # dropout's random stream continues where it stopped
            net.rng.bit_generator.state = meta["rng"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: malformed random state ({exc})") from None
        model.network_ = net
        model.classes_ = data["classes"]
        model.n_features_in_ = int(meta["n_features_in"])
        model.n_params_ = net.n_params
        model.loss_curve_ = list(meta["loss_curve"])
        model.t_ = int(meta["t"])
        model._init_optimizer()
        for name in model.optimizer_.buffer_names:
            if "opt_" + name in data:
                model.optimizer_.state[name][...] = data["opt_" + name]
        model.optimizer_.t = int(meta["opt_t"])
        return model


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")



class MLPClassifier(NetworkClassifier):
    """Multi-layer perceptron: ``Dense -> activation [-> Dropout]`` per hidden layer, then a
    dense output layer with one unit per class.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(64, 32)
    activation : {"relu", "tanh", "sigmoid"}, default="relu"
    dropout : float in [0, 1), default=0.0
        Dropout rate after every hidden activation (the paper uses dropout).
    loss : {"l2", "cross_entropy"}, default="l2"
    optimizer : {"sgd", "adam"}, default="sgd"
    learning_rate, momentum, batch_size, epochs, seed, dtype, backend, sparse_product
        See :class:`NetworkClassifier`.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    n_params_ : int
        Exact parameter count (weights and biases).
    network_ : Network
    loss_curve_ : list of float
        Mean training loss of each pass.
    """

    _param_names = ("hidden_layer_sizes", "activation", "dropout", "loss", "optimizer",
                    "learning_rate", "momentum", "batch_size", "epochs", "seed", "dtype",
                    "backend", "sparse_product")

    def __init__(self, hidden_layer_sizes=(64, 32), activation="relu", dropout=0.0, loss="l2",
                 optimizer="sgd", learning_rate=0.01, momentum=0.9, batch_size=32, epochs=10,
                 seed=0, dtype="float32", backend=None, sparse_product="auto"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.dropout = dropout
        self.loss = loss
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.batch_size = batch_size
        self.epochs = epochs
        self.seed = seed
        self.dtype = dtype
        self.backend = backend
        self.sparse_product = sparse_product

    def _make_layers(self, n_features, n_classes):
        layers = []
        for h in self.hidden_layer_sizes:
            _check_param("hidden_layer_sizes entries", h, "int", low=1)
            layers += [Dense(h), _ACTIVATIONS[self.activation]()]
            if self.dropout:
                layers.append(Dropout(self.dropout))
        return layers + [Dense(n_classes)]


class CNNClassifier(NetworkClassifier):
    """Convolutional classifier for 1-D signals or 2-D images given as flat rows.

    Parameters
    ----------
    input_shape : tuple of int
        One sample's shape, channels first: ``(C, L)`` for signals, ``(C, H, W)`` for images;
        ``X`` rows hold ``prod(input_shape)`` values in that (C-order) layout.
    conv_layers : tuple of (filters, kernel_size, pool_size)
        Each block is convolution ("same" padding, stride 1) -> activation -> max pooling
        (skipped for pool_size 1).
    hidden_layer_sizes : tuple of int
        Dense layers after the convolutions.
    Other parameters as :class:`MLPClassifier`.
    """

    _param_names = ("input_shape", "conv_layers", "hidden_layer_sizes", "activation", "dropout",
                    "loss", "optimizer", "learning_rate", "momentum", "batch_size", "epochs",
                    "seed", "dtype", "backend", "sparse_product")

    def __init__(self, input_shape=(1, 8, 8), conv_layers=((8, 3, 2),), hidden_layer_sizes=(32,),
                 activation="relu", dropout=0.0, loss="cross_entropy", optimizer="sgd",
                 learning_rate=0.01, momentum=0.9, batch_size=32, epochs=10, seed=0,
                 dtype="float32", backend=None, sparse_product="dense"):
        self.input_shape = input_shape
        self.conv_layers = conv_layers
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.dropout = dropout
        self.loss = loss
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.batch_size = batch_size
        self.epochs = epochs
        self.seed = seed
        self.dtype = dtype
        self.backend = backend
        self.sparse_product = sparse_product

    def _input_shape(self, n_features):
        shape = tuple(int(s) for s in self.input_shape)
        if len(shape) not in (2, 3) or int(np.prod(shape)) != n_features:
            raise ValueError(f"input_shape={shape} must be (C, L) or (C, H, W) with "
                             f"{n_features} values (the number of features)")
        return shape

    def _make_layers(self, n_features, n_classes):
        two_d = len(self._input_shape(n_features)) == 3
        conv, pool = (Conv2D, MaxPool2D) if two_d else (Conv1D, MaxPool1D)
        layers = []
        for filters, kernel, pool_size in self.conv_layers:
            layers += [conv(filters, kernel, 1, int(kernel) // 2), _ACTIVATIONS[self.activation]()]
            if int(pool_size) > 1:
                layers.append(pool(pool_size))
        for h in self.hidden_layer_sizes:
            layers += [Dense(h), _ACTIVATIONS[self.activation]()]
            if self.dropout:
                layers.append(Dropout(self.dropout))
        return layers + [Dense(n_classes)]
