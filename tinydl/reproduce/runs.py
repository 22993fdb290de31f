"""The two learners of the evaluation, run on one stream and timed.

TinyDL is :class:`tinydl.learner.TinyDLClassifier` itself, timed through its public hooks
(``transform_timer``, ``train_timer``, ``on_update``); the raw-feature network is
:class:`tinydl.baseline.RawStreamLearner`, timed the same way.  Network training is timed
around each retraining only; TinyDL's transform is timed on its own.  Test-error evaluations
for the curves are not timed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from ..baseline import RawStreamLearner, exec_time_us
from ..learner import TinyDLClassifier
from ..nn import MLPClassifier
from ..standardize import fit_stats

__all__ = ["Meter", "Run", "run_raw", "run_tiny", "predicted", "exec_time_us", "exec_times"]

class Meter:
    """Seconds and joules of the bracketed work, from a :mod:`hal.power` source.

    A context manager; each ``with`` adds to :attr:`seconds` and :attr:`joules`.

    Parameters
    ----------
    source : hal.power source
        ``start()`` / ``stop() -> reading`` with a ``joules`` field.
    """

    def __init__(self, source):
        self.source, self.seconds, self.joules = source, 0.0, 0.0

    def __enter__(self):
        self.source.start()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self._t0
        self.joules += self.source.stop().joules
        return False


@dataclass
class Run:
    """One learner's run on one stream."""

    accuracy: float
    val_accuracy: Optional[float]
    train_s: float                 # network training only
    train_j: float
    transform_s: float = 0.0
    transform_j: float = 0.0
    fills: List[int] = field(default_factory=list)
    curve: Dict[str, list] = field(default_factory=dict)
    model: object = None


def _stream(learner_fit, X, y, n_batch):
    for s in range(0, len(X), n_batch):
        learner_fit(X[s:s + n_batch], y[s:s + n_batch])


def _recipe(name):
    from .protocol import RECIPES
    return RECIPES[name]


def run_raw(S, hidden, st, source, classes, recipe="sgd-l2") -> Run:
    """Train the raw-feature network on the stream ``S`` (a dict of arrays: ``X, y`` the
    stream, ``Xte, yte`` the test set, ``Xval, yval`` the validation hold-out) with the
    training ``recipe`` (a name in :data:`tinydl.reproduce.protocol.RECIPES`).

    Returns
    -------
    Run
        With ``exec_us``: microseconds per sample of the network's prediction.
    """
    # the first 256 stream samples' statistics, the rule TinyDL's standardizer uses
    mu, sd = fit_stats(S["X"][:min(256, len(S["X"]))], np.float32)
    net = MLPClassifier(hidden_layer_sizes=tuple(hidden), dropout=st.raw_dropout, epochs=1,
                        seed=st.seed, dtype="float32", backend=st.backend,
                        **_recipe(recipe))
    learner = RawStreamLearner(net, st.window, st.n_batch, st.epochs, S["X"].shape[1],
                               np.float32)
    meter, fills = Meter(source), []
    Xte = ((S["Xte"] - mu) / sd).astype(np.float32)
    curve = {"samples": [], "seconds": [], "error": []}

    def update(lr):
        fills.append(int(lr.fill))
        curve["samples"].append(int(lr.seen))
        curve["seconds"].append(meter.seconds)
        curve["error"].append(1.0 - lr.net.score(Xte, S["yte"]))
    learner.train_timer, learner.on_update = meter, update
    _stream(lambda xb, yb: learner.partial_fit(((xb - mu) / sd).astype(np.float32), yb,
                                               classes), S["X"], S["y"], st.n_batch)
    if learner.seen % st.n_batch:
        learner.retrain(classes)
    val = None
    if S.get("Xval") is not None and len(S["Xval"]):
        val = net.score(((S["Xval"] - mu) / sd).astype(np.float32), S["yval"])
    run = Run(net.score(Xte, S["yte"]), val, meter.seconds, meter.joules, fills=fills,
              curve=curve, model=net)
    run.exec_us = exec_time_us(net.predict, Xte)
    return run


def exec_times(raw: Run, tiny: Run, Xte) -> dict:
    """The execution phase, one test sample at a time (:func:`exec_time_us`): the raw network
    (``raw.exec_us``, measured by :func:`run_raw`), TinyDL's network on the codes
    (``tiny.exec_us``) and TinyDL end to end (``tiny.exec_full_us``: standardize, code, the
    network).  Sets those on ``tiny``; returns the ratios (raw / TinyDL) and the times.

    Parameters
    ----------
    raw, tiny : Run
        From :func:`run_raw` and :func:`run_tiny`.
    Xte : ndarray of shape (n_test, n_features)
        The raw test rows (float32, as the raw network's are).
    """
    from hal.execution import execution_backend
    Xte = np.ascontiguousarray(Xte, np.float32)
    codes_te = tiny.model.transform(Xte)
    # which kernels coded the execution phase (hal.execution: native's where they build)
    kernels = execution_backend(tiny.model.transform_._be).name
    tiny.exec_us = exec_time_us(tiny.model.network_.predict, codes_te)
    tiny.exec_full_us = exec_time_us(tiny.model.predict, Xte)
    return dict(exec_time_ratio=raw.exec_us / tiny.exec_us,
                exec_time_ratio_with_transform=raw.exec_us / tiny.exec_full_us,
                exec_us_raw=raw.exec_us, exec_us_tinydl=tiny.exec_us,
                exec_us_tinydl_with_transform=tiny.exec_full_us, exec_kernels=kernels)


def run_tiny(S, l, k, alpha, hidden, st, source, classes, recipe="sgd-l2", standardize=True,
             X=None, y=None) -> Run:
    """Stream ``S`` (or ``X, y`` in their place) through TinyDL with the training ``recipe``,
    timed through the learner's hooks; ``run.model`` is the learner."""
    kw = dict(_recipe(recipe), window_policy=st.window_policy, rebuild=st.rebuild)
    tiny = TinyDLClassifier(l=l, k=k, alpha=alpha, hidden_layer_sizes=tuple(hidden),
                            window=st.window, n_batch=st.n_batch, epochs_per_update=st.epochs,
                            standardize=standardize, dropout=0.0, seed=st.seed, dtype="float32",
                            backend=st.backend, **kw)
    # the transform and the retraining never nest, so one source serves both meters
    train, transform, fills = Meter(source), Meter(source), []
    curve = {"samples": [], "seconds": [], "error": []}

    def update(t):
        fills.append(int(t.window_.fill))
        curve["samples"].append(int(t.n_samples_seen_))
        # TinyDL's time is the transform's and the network's together, as in Fig. 2
        curve["seconds"].append(transform.seconds + train.seconds)
        curve["error"].append(1.0 - t.score(S["Xte"], S["yte"]))
    tiny.transform_timer, tiny.train_timer, tiny.on_update = transform, train, update
    X = S["X"] if X is None else X
    y = S["y"] if y is None else y
    _stream(lambda xb, yb: tiny.partial_fit(xb, yb, classes=classes), X, y, st.n_batch)
    tiny.finish()
    val = None
    if S.get("Xval") is not None and len(S["Xval"]):
        val = tiny.score(S["Xval"], S["yval"])
    return Run(tiny.score(S["Xte"], S["yte"]), val, train.seconds, train.joules,
               transform.seconds, transform.joules, fills, curve, tiny)


# -- predictions on a device profile ----------------------------------------------------------

def _predict_training(profile, sizes, fills, epochs, batch_size):
    """Seconds and joules of the whole retraining schedule on ``profile``."""
    from hal.cost import predict_training_epoch
    sec = joules = 0.0
    cache = {}
    for n in fills:
        if n not in cache:
            cache[n] = predict_training_epoch(profile, sizes, n, batch_size=batch_size)
        sec += epochs * cache[n].seconds
        joules += epochs * cache[n].joules
    return sec, joules


def predicted(profile, m, l, k, n_stream, raw_sizes, tiny_sizes, raw_run, tiny_run, st):
    """Table I's figures predicted by :mod:`hal.cost` for ``profile`` (the same retraining
    schedule as the measured runs)."""
    from hal.cost import predict_inference, predict_transform
    tr = predict_transform(profile, m, l, k, n_stream)
    rs, rj = _predict_training(profile, raw_sizes, raw_run.fills, st.epochs,
                               raw_run.model.batch_size)
    ts, tj = _predict_training(profile, tiny_sizes, tiny_run.fills, st.epochs,
                               tiny_run.model.batch_size)
    ei_raw = predict_inference(profile, raw_sizes, 1).seconds
    ei_tiny = predict_inference(profile, tiny_sizes, 1).seconds
    ei_full = predict_inference(profile, tiny_sizes, 1, transform=(m, l, k)).seconds
    return dict(
        profile=profile, energy_source="modeled (profile power model)",
        preprocess_ms=tr.seconds / n_stream * 1e3,
        train_time_ratio=rs / ts, train_time_ratio_with_transform=rs / (ts + tr.seconds),
        train_energy_ratio=rj / tj, train_energy_ratio_with_transform=rj / (tj + tr.joules),
        exec_time_ratio=ei_raw / ei_tiny, exec_time_ratio_with_transform=ei_raw / ei_full,
        train_s_raw=rs, train_s_tinydl=ts, transform_s=tr.seconds)
