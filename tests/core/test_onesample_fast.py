"""The learner's one-sample predict in one Python frame (``OneSample.fast``, the fused
kernel's ``predict1b`` call): the labels of the checked paths, and nothing of it used once
any object it was made for is replaced."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from tinydl.learner import TinyDLClassifier


@pytest.fixture(params=["native", "blas"])
def fused_backend(request, require_backend):
    require_backend(request.param)
    require_backend("native")  # blas: its execution phase runs the native kernels
    return request.param


def _stream(n=700, m=24, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((5, m)) * 3
    y = rng.integers(0, 5, n)
    return (centers[y] + rng.standard_normal((n, m))).astype(np.float32), y


def _learner(backend, **kw):
    args = dict(l=16, k=5, hidden_layer_sizes=(12,), window=256, n_batch=128,
                epochs_per_update=2, backend=backend)
    args.update(kw)
    return TinyDLClassifier(**args)


def _checked_labels(clf, X):
    """The labels of the paths before the fast call: the prepared row's own predict (fused,
    four-argument call) one row at a time."""
    row = clf._row
    return np.concatenate([row.predict(X[i:i + 1]) for i in range(len(X))])


@pytest.mark.parametrize("standardize", [True, False])
def test_fast_predict_is_the_fused_and_the_batch_label(fused_backend, standardize):
    X, y = _stream()
    clf = _learner(fused_backend, standardize=standardize).fit(X[:500], y[:500])
    row = clf._row
    assert row.fast is not None
    Xt = X[500:600]
    labels = []
    for i in range(len(Xt)):
        got = row.fast(clf, Xt[i:i + 1])
        assert got is not None and got.shape == (1,)
        got2 = clf.predict(Xt[i:i + 1])
        assert got2 is not got and np.array_equal(got, got2)  # a new array each call
        labels.append(got[0])
    assert np.array_equal(np.array(labels), _checked_labels(clf, Xt))
    # the batch path's argmax, except on a tie within rounding (see tinydl.onesample)
    assert np.mean(np.array(labels) == clf.predict(Xt)) >= 0.99


def test_fast_predict_steps_aside_for_what_it_was_not_made_for(fused_backend):
    """Each object valid_for compares, replaced: ``fast`` returns None, and predict (made
    again on use) still gives the checked label; rows it does not take go the checked way."""
    X, y = _stream(seed=1)
    clf = _learner(fused_backend).fit(X[:500], y[:500])
    x1 = X[600:601]
    want = clf.predict(x1)
    row = clf._row

    def replaced(change):
        clf.predict(x1)  # (prepared again after the last change)
        fast = clf._row.fast
        change(clf)
        assert fast(clf, x1) is None
        assert np.array_equal(clf.predict(x1), want)
        assert clf._row.fast is not fast and clf._row.valid_for(clf)

    replaced(lambda c: setattr(c, "network_", copy.copy(c.network_)))
    replaced(lambda c: setattr(c.network_, "network_", copy.copy(c.network_.network_)))
    replaced(lambda c: setattr(c.transform_, "_into", None))
    replaced(lambda c: setattr(c.standardizer_, "mean_", c.standardizer_.mean_.copy()))
    replaced(lambda c: setattr(c, "standardizer_", copy.deepcopy(c.standardizer_)))
    replaced(lambda c: setattr(c.network_.network_, "params",
                               c.network_.network_.params.copy()))
    fast = clf._row.fast
    for other in (x1.astype(np.float64), np.asfortranarray(X[600:602])[:1], x1[0],
                  x1.tolist()):
        assert fast(clf, other) is None
    assert np.array_equal(clf.predict(x1.astype(np.float64)), want)
    bad = x1.copy()
    bad[0, 3] = np.nan
    assert fast(clf, bad) is None
    with pytest.raises(ValueError, match="NaN or Inf"):
        clf.predict(bad)
    del clf.__dict__["n_updates_"]  # not trained (as far as the learner says)
    assert fast(clf, x1) is None
    assert row is not clf._row


def test_fast_predict_absent_without_a_fused_kernel():
    X, y = _stream(seed=2)
    clf = _learner("numpy").fit(X[:500], y[:500])
    assert clf._row.fused is None and clf._row.fast is None
    assert clf.predict(X[600:601]).shape == (1,)
