"""The TinyDL learner: streaming transform -> bounded code window -> network.

The paper's training phase (Section III): each arriving sample goes through Algorithm 2 (it
joins the dictionary or is OMP-coded); codes are kept in a window of the last ``window``
samples; every ``n_batch`` samples the network is updated on that window.  The execution phase
projects a sample with the learned dictionary (OMP) and runs the network.

Determinism: the same seed and the same stream give the same model however the stream is cut
into ``partial_fit`` calls, because retraining happens at fixed sample counts (multiples of
``n_batch``), never at call boundaries.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from ._validation import check_array, check_int
from .io import atomic_write_text, load_npz, save_npz

__all__ = ["TinyDLClassifier"]

_STATE_KIND = "tinydl-learner"


class TinyDLClassifier:
    """Learn a classifier on a stream with TinyDL (transform, code window, network).

    Parameters
    ----------
    l, k, alpha : int, int, float
        Dictionary size, non-zeros per code and the projection-error threshold of Algorithm 2.
    hidden_layer_sizes : tuple of int
        The network on the codes (input width ``l``).
    window : int
        Codes kept for retraining (the paper's stored ``n``).
    n_batch : int
        Retrain every ``n_batch`` samples.
    epochs_per_update : int
        Passes over the window at each retraining.
    standardize : bool
        Per-feature standardization before the transform (a departure from the paper; see
        :class:`tinydl.transform.StreamingDictionary`).
    dropout, loss, learning_rate, momentum, batch_size : network training settings
        Defaults follow the paper: SGD with momentum, L2 loss.
    seed : int
    dtype : {"float32", "float64"}
    backend : str or hal.Backend, optional
    checkpoint_dir : str, optional
        Where :meth:`partial_fit` checkpoints the whole state (see :meth:`save`).
    checkpoint_every : int, optional
        Checkpoint after every ``checkpoint_every`` samples (at exact sample counts, however
        the stream is cut into calls), when ``checkpoint_dir`` is set.

    Attributes
    ----------
    transform_ : StreamingDictionary
    network_ : MLPClassifier
        Trained on compact codes (``k`` indices and values per sample) through a gather
        over the ``k`` rows of its first layer (``sparse_product="gather"``, fixed so that
        the model does not depend on a timing).
    codes_indices_, codes_values_ : ndarray of shape (window, k)
        The code window, a ring buffer in compact form (the paper's ``l*n`` dense codes take
        ``l / (k * (1 + 4 / itemsize))`` times more).
    classes_ : ndarray of shape (n_classes,)
    n_samples_seen_ : int
    n_updates_ : int
    """

    def __init__(self, l=100, k=20, alpha=0.3, hidden_layer_sizes=(64, 32), window=2048,
                 n_batch=256, epochs_per_update=5, standardize=True, dropout=0.0, loss="l2",
                 learning_rate=0.01, momentum=0.9, batch_size=32, seed=0, dtype="float32",
                 backend=None, checkpoint_dir=None, checkpoint_every=None):
        self.l = l
        self.k = k
        self.alpha = alpha
        self.hidden_layer_sizes = hidden_layer_sizes
        self.window = window
        self.n_batch = n_batch
        self.epochs_per_update = epochs_per_update
        self.standardize = standardize
        self.dropout = dropout
        self.loss = loss
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.batch_size = batch_size
        self.seed = seed
        self.dtype = dtype
        self.backend = backend
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every

    # -- construction -------------------------------------------------------------------
    def _init(self, n_features, classes):
        from .nn import MLPClassifier
        from .transform import StreamingDictionary
        check_int(self.window, "window", low=1)
        check_int(self.n_batch, "n_batch", low=1)
        check_int(self.epochs_per_update, "epochs_per_update", low=1)
        if self.checkpoint_every is not None:
            check_int(self.checkpoint_every, "checkpoint_every", low=1)
        self.transform_ = StreamingDictionary(l=self.l, k=self.k, alpha=self.alpha,
                                              standardize=self.standardize, dtype=self.dtype,
                                              backend=self.backend)
        self.network_ = MLPClassifier(hidden_layer_sizes=tuple(self.hidden_layer_sizes),
                                      dropout=self.dropout, loss=self.loss,
                                      learning_rate=self.learning_rate, momentum=self.momentum,
                                      batch_size=self.batch_size, epochs=1, seed=self.seed,
                                      dtype=self.dtype, backend=self.backend,
                                      sparse_product="gather")
        self.classes_ = np.unique(np.asarray(classes))
        self.n_features_in_ = int(n_features)
        dt = np.dtype(self.dtype)
        kk = min(int(self.k), int(self.l))
        self.codes_indices_ = np.full((int(self.window), kk), -1, np.int32)
        self.codes_values_ = np.zeros((int(self.window), kk), dt)
        self.labels_window_ = np.zeros(int(self.window), np.int64)
        self.window_fill_ = 0      # valid entries in the window
        self.window_head_ = 0      # next slot to write (ring buffer)
        self.n_samples_seen_ = 0
        self.n_updates_ = 0
        self.finished_at_ = -1     # n_samples_seen_ when finish() last ran
        self._pending_X = np.zeros((0, int(n_features)), dt)
        self._pending_y = np.zeros(0, np.int64)

    def _clear_pending(self):
        # fresh empty arrays: an empty view would keep the held rows' memory alive
        self._pending_X = np.zeros((0, self.n_features_in_), np.dtype(self.dtype))
        self._pending_y = np.zeros(0, np.int64)

    def _window_view(self):
        """The window's codes (compact) and labels in arrival order (oldest first)."""
        from .omp import SparseCodes
        n, h = self.window_fill_, self.window_head_
        if n < self.window:
            sl = slice(0, n)
        else:
            sl = np.r_[h:self.window, 0:h]
        return (SparseCodes(self.codes_indices_[sl], self.codes_values_[sl], int(self.l)),
                self.labels_window_[sl])

    def _push(self, codes, labels):
        idx_all, val_all = codes
        for start in range(0, len(labels), self.window):
            ci = idx_all[start:start + self.window]
            cv = val_all[start:start + self.window]
            y = labels[start:start + self.window]
            n = len(y)
            h = self.window_head_
            first = min(n, self.window - h)
            self.codes_indices_[h:h + first] = ci[:first]
            self.codes_values_[h:h + first] = cv[:first]
            self.labels_window_[h:h + first] = y[:first]
            rest = n - first
            if rest:
                self.codes_indices_[:rest] = ci[first:]
                self.codes_values_[:rest] = cv[first:]
                self.labels_window_[:rest] = y[first:]
            self.window_head_ = (self.window_head_ + n) % self.window
            self.window_fill_ = min(self.window, self.window_fill_ + n)

    def _retrain(self):
        codes, labels = self._window_view()
        for _ in range(int(self.epochs_per_update)):
            self.network_.partial_fit(codes, labels, classes=self.classes_)
        self.n_updates_ += 1

    # -- estimator API ------------------------------------------------------------------
    def partial_fit(self, X, y, classes=None):
        """Stream a batch: transform it, store its codes, retrain at every ``n_batch`` mark.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like, required on the first call
        """
        first = not hasattr(self, "transform_")
        X = check_array(X, "X", dtype=self.dtype,
                        n_features=None if first else self.n_features_in_)
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(X):
            raise ValueError(f"y must be 1-D with one label per sample: X has {len(X)} rows, "
                             f"y has shape {y.shape}")
        if first:
            if classes is None:
                raise ValueError("classes must be given on the first call to partial_fit")
            self._init(X.shape[1], classes)
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if unknown.size:
            raise ValueError(f"y holds {unknown.size} label(s) outside classes "
                             f"{self.classes_.tolist()}: {unknown[:5].tolist()}")
        if self.standardize and getattr(self.transform_, "mean_", None) is None:
            # the transform fixes its standardization from the first n_standardize samples:
            # hold raw samples until that many have arrived (bounded: n_standardize x m)
            if len(self._pending_X):
                X = np.concatenate([self._pending_X, X])
                y = np.concatenate([self._pending_y, y])
            need = int(self.transform_.n_standardize)
            if len(X) < need:
                # a copy: the caller may reuse its buffer for the next chunk
                self._pending_X, self._pending_y = np.array(X), np.array(y)
                return self
            self._clear_pending()
        every = self.checkpoint_every if self.checkpoint_dir is not None else None
        pos = coded = seg = 0   # rows pushed; rows transformed; first row of the codes held
        idx = val = None
        while pos < len(X):
            # cut at the next retraining (and checkpoint) mark so that both happen at fixed
            # sample counts whatever the batch sizes
            seen = self.n_samples_seen_
            to_mark = self.n_batch - seen % self.n_batch
            if every:
                to_mark = min(to_mark, every - seen % every)
            end = min(len(X), pos + to_mark)
            if pos < coded < end:
                end = coded  # first the rest of the rows already coded (not at a mark)
            if end > coded:
                # transform only up to the mark, so that a checkpoint there holds a transform
                # that has seen exactly the samples before it (the batch that fixes the
                # standardization statistics must hold n_standardize rows, though)
                stop = end
                if self.standardize and getattr(self.transform_, "mean_", None) is None:
                    stop = max(end, min(len(X), coded + int(self.transform_.n_standardize)))
                codes = self.transform_.partial_fit_transform(X[coded:stop], dense=False)
                idx, val, seg, coded = codes.indices, codes.values, coded, stop
            self._push((idx[pos - seg:end - seg], val[pos - seg:end - seg] * self._code_scale),
                       y[pos:end])
            self.n_samples_seen_ += end - pos
            if self.n_samples_seen_ % self.n_batch == 0:
                self._retrain()
            if every and self.n_samples_seen_ % every == 0 and coded == end:
                self.save(self.checkpoint_dir)
            pos = end
        return self

    def fit(self, X, y):
        """Reset, then stream ``X`` in order; a final update covers a partial last block."""
        for attr in ("transform_", "network_"):
            if hasattr(self, attr):
                delattr(self, attr)
        y = np.asarray(y)
        self.partial_fit(X, y, classes=np.unique(y))
        return self.finish()

    def finish(self):
        """End of the stream: code any samples still held for the standardization
        statistics (a stream shorter than ``n_standardize``) and update the network on the
        samples that arrived since the last ``n_batch`` mark.  Returns ``self``."""
        if not hasattr(self, "transform_"):
            raise ValueError("nothing to finish: this TinyDLClassifier has seen no data")
        if self.finished_at_ == self.n_samples_consumed_:
            return self  # already finished at this point of the stream (a resumed run)
        if len(self._pending_X):
            self.transform_.set_params(n_standardize=len(self._pending_X))
            Xp, yp = self._pending_X, self._pending_y
            self._clear_pending()
            self.partial_fit(Xp, yp)
        if self.n_samples_seen_ % self.n_batch:
            self._retrain()
        self.finished_at_ = self.n_samples_seen_
        return self

    @property
    def n_samples_consumed_(self) -> int:
        """Samples taken from the stream: coded ones plus those held for the
        standardization statistics (where a resumed stream continues)."""
        return int(self.n_samples_seen_ + len(self._pending_X))

    def _check_fitted(self):
        if not hasattr(self, "network_") or self.n_updates_ == 0:
            raise ValueError("this TinyDLClassifier has not been trained yet: call fit, or "
                             f"partial_fit with at least n_batch={self.n_batch} samples")

    def transform(self, X):
        """Codes of ``X`` on the learned dictionary, shape (n_samples, l)."""
        self._check_fitted()
        return self.transform_.transform(X)

    @property
    def _code_scale(self):
        # A sample coded on unit-norm atoms has coefficients of the size of its norm, about
        # sqrt(m) after standardization, concentrated on k inputs: fed as they are, SGD at the
        # raw network's learning rate diverges as m grows.  The network sees the codes times
        # sqrt(k / m), about unit size per non-zero whatever m (a fixed, saved-free scaling).
        return np.dtype(self.dtype).type(np.sqrt(min(self.k, self.l) / self.n_features_in_))

    def _network_input(self, X):
        from .omp import SparseCodes
        c = self.transform_.transform(X, dense=False)
        return SparseCodes(c.indices, c.values * self._code_scale, c.n_atoms)

    def predict_proba(self, X):
        self._check_fitted()
        return self.network_.predict_proba(self._network_input(X))

    def predict(self, X):
        self._check_fitted()
        return self.network_.predict(self._network_input(X))

    def score(self, X, y):
        """Mean accuracy on ``(X, y)``."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    @property
    def n_params_(self) -> int:
        """Parameters of the network on the codes."""
        return int(self.network_.n_params_)

    # -- checkpoints --------------------------------------------------------------------
    def save(self, directory):
        """Checkpoint the whole state into ``directory``.

        Each checkpoint is written to a fresh sub-directory ``ckpt-<samples>`` (or
        ``ckpt-<samples>-1`` when ``LATEST`` already names ``ckpt-<samples>``) (transform,
        network and learner state as ``.npz``), then the file ``LATEST`` is replaced atomically
        to point at it, and older checkpoints are removed.  A crash at any point leaves the
        previous checkpoint intact and ``LATEST`` naming a complete one.
        """
        self._check_started()
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        name = f"ckpt-{self.n_samples_seen_:012d}"
        try:
            with open(os.path.join(directory, "LATEST")) as fh:
                current = fh.read().strip()
        except (OSError, ValueError):
            current = None
        if name == current:
            # never rewrite the checkpoint LATEST names in place (e.g. after finish() at the
            # same sample count): a crash midway would leave it a mix of old and new files
            name += "-1"
        target = os.path.join(directory, name)
        if os.path.isdir(target):  # a partial checkpoint of a run killed midway
            _rmtree(target)
        os.makedirs(target, exist_ok=True)
        # parts that have seen no data yet (the transform holds its first n_standardize
        # samples back; the network trains at the first n_batch mark) are rebuilt on load
        has_transform = getattr(self.transform_, "n_samples_seen_", 0) > 0
        has_network = hasattr(self.network_, "classes_")
        if has_transform:
            self.transform_.save(os.path.join(target, "transform.npz"))
        if has_network:
            self.network_.save(os.path.join(target, "network.npz"))
        params = {k: np.array(repr(v)) for k, v in self.get_params().items()}
        save_npz(os.path.join(target, "learner.npz"), dict(
            codes_indices=self.codes_indices_, codes_values=self.codes_values_,
            labels_window=self.labels_window_,
            window_fill=np.int64(self.window_fill_), window_head=np.int64(self.window_head_),
            n_samples_seen=np.int64(self.n_samples_seen_), n_updates=np.int64(self.n_updates_),
            finished_at=np.int64(self.finished_at_),
            classes=self.classes_, n_features=np.int64(self.n_features_in_),
            pending_X=self._pending_X, pending_y=self._pending_y,
            has_transform=np.int64(has_transform), has_network=np.int64(has_network),
            **{f"param_{k}": v for k, v in params.items()}), kind=_STATE_KIND)
        atomic_write_text(os.path.join(directory, "LATEST"), name + "\n")
        for entry in os.listdir(directory):
            if entry.startswith("ckpt-") and entry != name:
                _rmtree(os.path.join(directory, entry))
        return target

    def _check_started(self):
        if not hasattr(self, "transform_"):
            raise ValueError("nothing to save: this TinyDLClassifier has seen no data")

    @classmethod
    def load(cls, directory, backend=None):
        """Resume from the checkpoint that ``directory/LATEST`` names."""
        from .io import ModelFileError
        from .nn import MLPClassifier
        from .transform import StreamingDictionary
        directory = os.fspath(directory)
        try:
            with open(os.path.join(directory, "LATEST")) as fh:
                name = fh.read().strip()
        except OSError as exc:
            raise ModelFileError(f"no checkpoint in {directory}: {exc.strerror}") from None
        if not name.startswith("ckpt-") or os.sep in name or "/" in name:
            raise ModelFileError(f"{directory}/LATEST names {name!r}, not a checkpoint")
        target = os.path.join(directory, name)
        st = load_npz(os.path.join(target, "learner.npz"), _STATE_KIND,
                      required=("codes_indices", "codes_values", "labels_window", "window_fill", "window_head",
                                "n_samples_seen", "n_updates", "classes", "n_features",
                                "pending_X", "pending_y"))
        params = {}
        for key, val in st.items():
            if key.startswith("param_"):
                params[key[6:]] = _literal(str(val))
        self = cls(**params)
        if backend is not None:
            self.backend = backend
        self._init(int(st["n_features"]), st["classes"])
        if int(st.get("has_transform", 1)):
            self.transform_ = StreamingDictionary.load(os.path.join(target, "transform.npz"))
        if int(st.get("has_network", 1)):
            self.network_ = MLPClassifier.load(os.path.join(target, "network.npz"))
        self.codes_indices_ = st["codes_indices"]
        self.codes_values_ = st["codes_values"]
        self.labels_window_ = st["labels_window"]
        self.window_fill_ = int(st["window_fill"])
        self.window_head_ = int(st["window_head"])
        self.n_samples_seen_ = int(st["n_samples_seen"])
        self.n_updates_ = int(st["n_updates"])
        self.finished_at_ = int(st.get("finished_at", -1))
        self.classes_ = st["classes"]
        self.n_features_in_ = int(st["n_features"])
        self._pending_X, self._pending_y = st["pending_X"], st["pending_y"]
        want = (self.window, min(self.k, self.l))
        for name in ("codes_indices_", "codes_values_"):
            got = getattr(self, name).shape
            if got != want:
                raise ModelFileError(f"{target}: {name.rstrip('_')} has shape {got}, "
                                     f"expected {want} (window, k)")
        if self.labels_window_.shape != (self.window,):
            raise ModelFileError(f"{target}: labels_window has shape "
                                 f"{self.labels_window_.shape}, expected ({self.window},)")
        return self

    def get_params(self, deep=False):
        return {k: getattr(self, k) for k in (
            "l", "k", "alpha", "hidden_layer_sizes", "window", "n_batch", "epochs_per_update",
            "standardize", "dropout", "loss", "learning_rate", "momentum", "batch_size", "seed",
            "dtype")}

    def set_params(self, **params):
        for key, value in params.items():
            if key not in self.get_params() and key != "backend":
                raise ValueError(f"unknown parameter {key!r}")
            setattr(self, key, value)
        return self


def _literal(text):
    """Parse a parameter saved with repr(): numbers, strings, None, booleans, tuples of ints.

    A tiny parser on purpose: no eval of file contents.
    """
    text = text.strip()
    if text in ("None", "True", "False"):
        return {"None": None, "True": True, "False": False}[text]
    if text[:1] in "'\"" and text[-1:] == text[:1]:
        return text[1:-1]
    if text[:1] in "([" and text[-1:] in ")]":
        inner = [p.strip() for p in text[1:-1].split(",") if p.strip()]
        return tuple(_literal(p) for p in inner)
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"cannot read saved parameter {text!r}") from None


def _rmtree(path):
    for root, dirs, files in os.walk(path, topdown=False):
        for f in files:
            os.unlink(os.path.join(root, f))
        for d in dirs:
            os.rmdir(os.path.join(root, d))
    os.rmdir(path)
