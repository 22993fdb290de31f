"""The baseline: the conventional network trained on the raw features with TinyDL's schedule.

Used by ``tinydl demo`` and :mod:`tinydl.reproduce` to compare TinyDL with the network the
paper compares it to: the same stream, retrained every ``n_batch`` samples on the last
``window`` samples (raw rows instead of codes).
"""
from __future__ import annotations

import contextlib
import time

import numpy as np

__all__ = ["RawStreamLearner", "exec_time_us"]


class RawStreamLearner:
    """The conventional network, trained on the raw features with TinyDL's schedule.

    Parameters
    ----------
    net : MLPClassifier
        The network (``epochs=1``; each retraining makes ``epochs`` passes).
    window : int
        Samples kept for retraining.
    n_batch : int
        Retrain every ``n_batch`` samples.
    epochs : int
        Passes over the window at each retraining.
    m : int
        Features per sample.
    dtype : numpy dtype

    Attributes
    ----------
    X : ndarray of shape (window, m)
    y : ndarray of shape (window,)
    fill, head, seen : int
        Valid rows, the next slot to write, samples seen.

    Notes
    -----
    Timing hooks, as on :class:`tinydl.learner.TinyDLClassifier`: ``train_timer`` (a context
    manager entered around each retraining) and ``on_update(learner)`` (called after it).
    """

    train_timer = None
    on_update = None

    def __init__(self, net, window, n_batch, epochs, m, dtype):
        self.net, self.window, self.n_batch, self.epochs = net, window, n_batch, epochs
        self.X = np.zeros((window, m), dtype)
        self.y = np.zeros(window, np.int64)
        self.fill = self.head = self.seen = 0

    def partial_fit(self, X, y, classes):
        """Stream rows (already standardized), retraining at every ``n_batch`` mark.

        Parameters
        ----------
        X : ndarray of shape (n_samples, m)
        y : ndarray of shape (n_samples,)
        classes : array-like of shape (n_classes,)
        """
        for i in range(len(X)):
            self.X[self.head], self.y[self.head] = X[i], y[i]
            self.head = (self.head + 1) % self.window
            self.fill = min(self.window, self.fill + 1)
            self.seen += 1
            if self.seen % self.n_batch == 0:
                self.retrain(classes)

    def retrain(self, classes):
        """``epochs`` passes over the window (oldest row first).

        Parameters
        ----------
        classes : array-like of shape (n_classes,)
        """
        if self.fill < self.window:
            Xw, yw = self.X[:self.fill], self.y[:self.fill]
        else:
            order = np.r_[self.head:self.window, 0:self.head]
            Xw, yw = self.X[order], self.y[order]
        with self.train_timer or contextlib.nullcontext():
            for _ in range(self.epochs):
                self.net.partial_fit(Xw, yw, classes=classes)
        if self.on_update is not None:
            self.on_update(self)


def exec_time_us(predict, X, repeats=3) -> float:
    """Microseconds per sample of ``predict`` called one sample at a time.

    Parameters
    ----------
    predict : callable
        Takes an array of shape (1, n_features).
    X : ndarray of shape (n_samples, n_features)
        The first 200 rows are used.
    repeats : int
        The best of this many runs is kept.

    Returns
    -------
    float
    """
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(min(len(X), 200)):
            predict(X[i:i + 1])
        best = min(best, (time.perf_counter() - t0) / min(len(X), 200))
    return best * 1e6
