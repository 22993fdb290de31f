"""Classifiers with scikit-learn's conventions on top of :class:`~tinydl.nn.network.Network`.

* :class:`MLPClassifier`: dense layers (the TinyDL paper's network on codes or raw features);
* :class:`CNNClassifier` (:mod:`.cnn`): 1-D or 2-D convolution and pooling blocks, then dense
  layers.

Both train by mini-batch SGD with momentum (the paper's), Adam or Adafactor, on the L2 loss
(the paper's) or softmax cross-entropy; ``partial_fit`` continues from the current weights
(the paper's update every n_batch samples).  Input ``X`` is a dense array or compact codes
(:class:`tinydl.codes.SparseCodes`).  Models are saved to ``.npz`` atomically, never pickled.
"""
from __future__ import annotations

import contextlib
import json
import numbers
from typing import Dict, List

import numpy as np

from ..errors import (
    DataConversionWarning,
    DivergenceError,
    ModelFileError,
    NotFittedError,
    not_fitted_error,
)
from ..io import array_digest, load_npz, save_npz, verify_digest
from .infer import row_is_finite
from .layers import Dense, Dropout, ReLU, Sigmoid, Tanh
from .losses import LOSSES, softmax
from .network import Network
from .optim import OPTIMIZERS
from .registry import layer_from_config
from .trainer import (
    InputChecks,
    Trainer,
    _check_param,
)

__all__ = ["NetworkClassifier", "MLPClassifier", "CNNClassifier", "DivergenceError",
           "NotFittedError", "DataConversionWarning"]

_ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid}
_FILE_KIND = "tinydl.nn.classifier"


def _writable(obj) -> None:
    """Replace the read-only arrays among ``obj``'s attributes (and in its dict-valued
    attributes) by writable copies."""
    if obj is None or not hasattr(obj, "__dict__"):
        return
    for key, v in list(vars(obj).items()):
        if isinstance(v, np.ndarray) and not v.flags.writeable:
            setattr(obj, key, np.array(v, copy=True))
        elif isinstance(v, dict):
            for k2, a in list(v.items()):
                if isinstance(a, np.ndarray) and not a.flags.writeable:
                    v[k2] = np.array(a, copy=True)


class NetworkClassifier(Trainer, InputChecks):
    """Shared machinery; subclasses define the layers in :meth:`_make_layers`.

    Parameters common to every subclass: ``loss`` ("l2" or "cross_entropy"), ``optimizer``
    ("sgd", "adam" or "adafactor"), ``learning_rate``, ``momentum`` (SGD), ``batch_size``,
    ``epochs`` (of ``fit``; ``partial_fit`` makes one pass), ``seed`` (weights, shuffling and
    dropout), ``dtype`` ("float32" or "float64"), ``backend`` (a hal backend name or object,
    default NumPy) and ``sparse_product`` ("auto", "gather" or "dense": the first layer's
    product for compact-code input; "auto" times both on the first batch and keeps the
    faster).
    """

    # models made before weight averaging existed (copies of them) hold no average
    n_averaged_ = 0

    #: passes kept in ``loss_curve_`` (None: all).  Not a constructor parameter: a holder
    #: that retrains the network along a stream (the TinyDL learner) bounds it, so that a
    #: long stream does not grow the model (a Python float a pass, ~32 bytes)
    loss_curve_len = None

    # -- sklearn plumbing ---------------------------------------------------------------
    _param_names: tuple = ()

    def get_params(self, deep=True) -> Dict:
        """The constructor's parameters (scikit-learn's convention)."""
        return {name: getattr(self, name) for name in self._param_names}

    def set_params(self, **params):
        """Set constructor parameters; returns ``self``."""
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
        self.n_epochs_ = 0
        self.t_ = 0
        self.n_averaged_ = 0

    def _dense_layers(self, n_classes) -> List:
        """``hidden_layer_sizes`` dense layers (activation, dropout), then the output layer."""
        layers = []
        for h in self.hidden_layer_sizes:
            layers += [Dense(h), _ACTIVATIONS[self.activation]()]
            if self.dropout:
                layers.append(Dropout(self.dropout))
        return layers + [Dense(n_classes)]

    def _init_optimizer(self):
        kw = {"momentum": self.momentum} if self.optimizer == "sgd" else {}
        self.optimizer_ = OPTIMIZERS[self.optimizer](self.learning_rate, **kw)
        self.optimizer_.prepare(self.network_.n_params, self.network_.dtype,
                                self.network_.layout)
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
        data, n, m, sparse = self._check_X(X, train=True)
        y = self._check_y(y, n)
        self.classes_ = np.unique(y)
        yenc = self._encode(y)
        self._build(m, len(self.classes_))
        self._train(data, yenc, n, sparse, self.epochs)
        return self

    def partial_fit(self, X, y, classes=None, epochs=1, rows=None, average=None,
                    scratch=None):
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
        rows : array-like of int, optional
            Train on these rows of ``(X, y)`` only (the whole of ``X`` and ``y`` is still
            validated; a code window's occupied slots, without a copy of them).
        average : float in [0, 1), optional
            Then blend the weights this call trained into the averaged weights the model
            predicts with: ``A = average * A + (1 - average) * W`` (the first such call
            starts the average at ``W``; see :meth:`_averaged_training`).  Once started,
            every call trains the training weights ``W``, not ``A``.
        scratch : list of ndarray, optional
            Arrays whose contents this call may overwrite (C-contiguous, writeable; an
            owner's workspaces that are idle while the network trains: the learner lends its
            transform's OMP scratch).  ``A``'s float16 stash is laid over them while ``W``
            trains; only what does not fit is the model's own memory (for the call).  The
            results are the same bits with or without.  Nothing else may use them during
            the call (not thread-safe: a transform in another thread that wrote them would
            corrupt ``A``).

        Returns
        -------
        self
        """
        _check_param("epochs", epochs, "int", low=1)
        if average is not None and not (isinstance(average, numbers.Real) and
                                        not isinstance(average, (bool, np.bool_)) and
                                        0 <= average < 1):
            raise ValueError(f"average must be a number in [0, 1), got {average!r}")
        first = not hasattr(self, "network_")
        data, n, m, sparse = self._check_X(X, None if first else self.n_features_in_,
                                           train=True)
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
        if rows is not None:
            rows = np.asarray(rows)
            if rows.ndim != 1 or rows.dtype.kind not in "iu" or (rows.size and (
                    int(rows.min()) < 0 or int(rows.max()) >= n)):
                raise ValueError(f"rows must be a 1-D array of row indices in [0, {n}), got "
                                 f"{rows.dtype} of shape {rows.shape}")
        if scratch is not None:
            scratch = self._check_scratch(scratch)
        with self._averaged_training(average, scratch):
            for _ in range(int(epochs)):
                self._train(data, yenc, n, sparse, 1, rows=rows)
        return self

    # -- weight averaging ------------------------------------------------------------------
    @contextlib.contextmanager
    def _averaged_training(self, average, scratch=None):
        """Train the training weights ``W``, then blend them into the averaged ones ``A``.

        Between calls (once an average has started, ``n_averaged_ > 0``) the network's
        parameter buffer holds ``A``, what every prediction path reads (the one-sample
        kernels are bound to that buffer), and ``W`` waits in the gradient buffer, which only
        training uses: the average costs ``|param|`` float16 values (``A``'s stash while
        ``W`` trains, laid over the caller's idle ``scratch`` first), not a third float32
        copy.  ``A`` goes through float16 once per call:
        ``A = average * float16(A) + (1 - average) * W``, elementwise in the model's dtype
        (a relative rounding of 2**-11 that the blend shrinks by ``average`` each time; a
        weight past float16's range, 65504, would become infinite: weights of networks
        that train stay far below it).  A call without ``average`` keeps ``A`` up to that
        rounding.
        An error during training (a divergence) leaves ``W`` at the last finite step and
        ``A`` as it was, up to that rounding.
        """
        net = self.network_
        started = self.n_averaged_ > 0
        if started:
            stash = _pieces(net.params, self._stash_views(net.n_params, scratch))
            for a, v in stash:
                np.copyto(v, a)                     # A, rounded to float16
            np.copyto(net.params, net.grads)        # W
        try:
            yield
        finally:
            if started:
                np.copyto(net.grads, net.params)    # W waits in the gradient buffer
                for a, v in stash:
                    np.copyto(a, v)                 # A
                stash = None                        # (its own part freed before the blend)
        if average is None:
            return
        if not started:  # the average starts at the weights trained so far
            np.copyto(net.grads, net.params)
        else:
            _blend(net.params, net.grads, float(average))
        self.n_averaged_ += 1

    def _check_scratch(self, scratch) -> list:
        """``scratch`` as a list, each array checked (before any state changes): C-contiguous,
        writeable, no Python objects, no memory shared with another of them or with the
        network's own buffers (what the stash would overwrite)."""
        arrays = list(scratch)
        own = [getattr(getattr(self, "network_", None), n, None) for n in ("params", "grads")]
        for i, a in enumerate(arrays):
            if not (isinstance(a, np.ndarray) and a.flags.c_contiguous and a.flags.writeable
                    and not a.dtype.hasobject):
                raise ValueError("scratch arrays must be C-contiguous writeable numeric "
                                 f"ndarrays; scratch[{i}] is {type(a).__name__}"
                                 + (f" {a.dtype}{a.shape}" if isinstance(a, np.ndarray) else ""))
            for j, b in enumerate(arrays[:i] + [o for o in own if o is not None]):
                if np.may_share_memory(a, b):
                    what = f"scratch[{j}]" if j < i else "the network's own buffers"
                    raise ValueError(f"scratch[{i}] ({a.nbytes} bytes) shares memory with "
                                     f"{what}: lent scratch must be memory nothing else uses "
                                     "during the call")
        return arrays

    def _stash_views(self, n, scratch):
        """Float16 views that together hold ``n`` values: over the lent ``scratch`` arrays
        first (their bytes reinterpreted, in order), then the model's own stash for the rest
        (allocated for the call only: between calls the lent arrays may grow, as the
        dictionary does, and the rest would then be larger than it needs to be)."""
        views, left = [], int(n)
        for a in scratch or ():
            cap = min(a.nbytes // 2, left)
            if cap:
                views.append(a.reshape(-1).view(np.uint8)[:2 * cap].view(np.float16))
                left -= cap
        if left:
            views.append(np.empty(left, np.float16))
        return views

    def stop_average(self) -> None:
        """End a running average: predictions use the training weights again (``W`` back in
        the parameter buffer)."""
        if self.n_averaged_:
            np.copyto(self.network_.params, self.network_.grads)
            self.n_averaged_ = 0

    @property
    def training_params_(self) -> np.ndarray:
        """The weights training continues from: the network's parameters, or while an
        average runs (``n_averaged_ > 0``) the training weights ``W`` (a view)."""
        self._check_fitted()
        return self.network_.grads if self.n_averaged_ else self.network_.params

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

    def _row_outputs(self, X):
        """The outputs (1, n_outputs) of one sample through the network's one-sample plan
        (:meth:`Network.row_plan`: buffers bound once, nothing allocated), a view of the
        plan's buffer; None unless ``X`` is one finite C-contiguous row of the model's dtype
        and width on a network the plan runs (the batch path then checks, converts and
        raises with the numbers).  The same values, bit for bit, as the batch path on that
        row."""
        net = self.__dict__.get("network_")
        if (net is None or type(X) is not np.ndarray or X.ndim != 2 or X.shape[0] != 1
                or X.dtype != net.dtype or not X.flags.c_contiguous
                or X.shape[1] != self.n_features_in_):
            return None
        plan = net.row_plan(False)
        if plan is None or not row_is_finite(X):
            return None
        return plan.run(X)

    def _outputs(self, X, trusted=False):
        """The network's outputs on ``X``.  ``trusted``: ``X`` is compact codes built by
        tinydl itself (int32 C-contiguous indices in range, values in the model's dtype, zero
        in the padding), so :meth:`_check_X`'s checks and copies are skipped - the same
        arithmetic, fewer passes (the learner's one-sample prediction)."""
        self._check_fitted()
        if not trusted:
            z = self._row_outputs(X)
            if z is not None:
                return z.copy()
        if trusted:
            data, n, sparse = X, X.indices.shape[0], True
            data.padded_indices()
        else:
            data, n, _, sparse = self._check_X(X, self.n_features_in_)
        net = self.network_
        b = max(self.batch_size, 1)
        net.ensure(b, sparse)
        out = np.empty((n, len(self.classes_)), net.dtype)
        for s in range(0, n, b):
            e = min(n, s + b)
            if sparse:
                xb = data.rows(s, e)
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
        z = self._row_outputs(X)
        if z is not None:  # one sample: the label straight from the plan's buffer
            j = int(z.argmax())
            return self.classes_[j:j + 1].copy()
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
        if state.get("n_averaged_"):
            # the training weights wait in the gradient buffer, which a network's copy
            # makes anew (zeros): carried beside it
            state["_w_copy"] = np.array(self.network_.grads, copy=True)
        return state

    def __setstate__(self, state):
        # a copy joblib memory-maps has read-only arrays: the ones training writes (the
        # optimizer's state, the loss's workspace) become private copies; predict reads only
        w = state.pop("_w_copy", None)
        self.__dict__.update(state)
        for obj in (self, self.__dict__.get("optimizer_"), self.__dict__.get("loss_fn_")):
            _writable(obj)
        if w is not None:
            np.copyto(self.network_.grads, w)

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
              "optimizer": OPTIMIZERS[self.optimizer].state_bytes(net.n_params, it, net.layout),
              "activations": self._workspace_bytes(net, b, sparse) + loss_ws,
              "batch": batch, "labels": 16 * int(n_samples)}
        fp["total"] = int(sum(fp.values()))
        return fp

    def _workspace_bytes(self, net, b, sparse) -> int:
        """The layers' workspaces as training allocates them: a fixed first-layer product
        ("gather") set first, as the trainer does."""
        first = net.layers[0]
        if not (sparse and isinstance(first, Dense) and self.sparse_product != "auto"):
            return net.workspace_bytes(b, sparse)
        saved, first.sparse_product = first.sparse_product, self.sparse_product
        try:
            return net.workspace_bytes(b, sparse)
        finally:
            first.sparse_product = saved

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
                "t": self.t_, "opt_t": self.optimizer_.t, "n_epochs": self.n_epochs_,
                "n_averaged": self.n_averaged_,
                "loss_curve_len": self.loss_curve_len,
                "rng": net.rng.bit_generator.state,
                # the first layer's product for compact codes as training left it ("auto"
                # picks one by timing): a loaded model computes as the saved one did
                "first_sparse_product": getattr(net.layers[0], "sparse_product", None)}
        meta["params"]["backend"] = None  # a backend object is not data
        # the loss curve grows by an entry per epoch: a float64 member, not JSON text in the
        # meta's unicode array (4 bytes a character, then copied again by the digest: ~40x
        # its float64 bytes in transient memory at each checkpoint)
        arrays = {"params": net.params, "classes": classes,
                  "loss_curve": np.asarray(self.loss_curve_, np.float64),
                  "meta": np.array(json.dumps(meta, default=_json_default))}
        for name, arr in self.optimizer_.state.items():
            arrays["opt_" + name] = arr
        if self.n_averaged_:
            # "params" are the averaged weights (what a loaded model predicts with), these
            # the weights training continues from
            arrays["params_train"] = net.grads
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
            if not issubclass(klass, cls):
                raise ModelFileError(f"{path} holds a {meta['class']}, not a {cls.__name__} "
                                     f"(read it with {meta['class']}.load or "
                                     "NetworkClassifier.load)")
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
        except ModelFileError:
            raise
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
        first_mode = meta.get("first_sparse_product")
        if first_mode in ("gather", "dense") and isinstance(net.layers[0], Dense):
            net.layers[0].sparse_product = first_mode
        model.network_ = net
        model.classes_ = data["classes"]
        model.n_features_in_ = int(meta["n_features_in"])
        model.n_params_ = net.n_params
        model.loss_curve_ = (data["loss_curve"].astype(np.float64).tolist()
                             if "loss_curve" in data else list(meta["loss_curve"]))
        model.t_ = int(meta["t"])
        # files written before the count existed: every pass was in the curve
        model.n_epochs_ = int(meta.get("n_epochs", len(model.loss_curve_)))
        if meta.get("loss_curve_len") is not None:
            model.loss_curve_len = int(meta["loss_curve_len"])
        model._init_optimizer()
        for name in model.optimizer_.buffer_names:
            if "opt_" + name in data:
                model.optimizer_.state[name][...] = data["opt_" + name]
        model.optimizer_.t = int(meta["opt_t"])
        model.n_averaged_ = int(meta.get("n_averaged", 0))
        if model.n_averaged_:
            w = data.get("params_train")
            if w is None or w.shape != (net.n_params,):
                raise ModelFileError(f"{path}: an averaged model needs params_train of shape "
                                     f"({net.n_params},), got "
                                     f"{None if w is None else w.shape}")
            net.grads[...] = w
        return model


#: elements blended at a time (the blend's scratch: 1 KB of float32, within the footprint's
#: allowance for a retraining's small buffers)
_BLEND_CHUNK = 256


def _pieces(flat: np.ndarray, views: list) -> list:
    """``(piece of flat, view)`` pairs: ``flat`` cut into consecutive pieces the sizes of
    ``views`` (1-D arrays whose sizes add up to its size), for copies either way."""
    out, o = [], 0
    for v in views:
        out.append((flat[o:o + v.size], v))
        o += v.size
    return out


def _blend(a: np.ndarray, w: np.ndarray, beta: float) -> None:
    """``a = beta * a + (1 - beta) * w`` in place, in ``a``'s dtype, a chunk at a time (no
    temporary of the parameters' size)."""
    scratch = np.empty(min(_BLEND_CHUNK, a.size), a.dtype)
    for s in range(0, a.size, _BLEND_CHUNK):
        e = min(a.size, s + _BLEND_CHUNK)
        t = scratch[:e - s]
        np.multiply(w[s:e], a.dtype.type(1.0 - beta), out=t)
        a[s:e] *= a.dtype.type(beta)
        a[s:e] += t


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
    optimizer : {"sgd", "adam", "adafactor"}, default="sgd"
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
        Mean training loss of each pass (the last :attr:`loss_curve_len` passes when that is
        set: a network retrained along an unbounded stream keeps a bounded curve).
    n_epochs_ : int
        Passes run in all (seeds each pass's shuffle, so a bounded curve changes no result).
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
        for h in self.hidden_layer_sizes:
            _check_param("hidden_layer_sizes entries", h, "int", low=1)
        return self._dense_layers(n_classes)


from .cnn import CNNClassifier  # noqa: E402 - re-exported; it builds on NetworkClassifier
