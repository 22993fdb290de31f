"""Numerical edge cases through the streaming learner: the run finishes with finite outputs
(possibly with a warning) or stops with a typed error (ValueError/TypeError); never a crash
or a NaN model."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from tinydl.learner import TinyDLClassifier
from tinydl.transform import StreamingDictionary

PARAMS = dict(l=10, k=3, alpha=0.3, hidden_layer_sizes=(6,), window=64, n_batch=32,
              epochs_per_update=1, seed=0)


def _base(n=300, m=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, m))
    y = (X[:, 0] > 0).astype(np.int64)
    return X, y


def _cases():
    X, y = _base()
    dup = np.repeat(X[:1], len(X), axis=0)
    near = X[:1] * (1 + 1e-7 * np.arange(len(X))[:, None])
    const = X.copy()
    const[:, 2] = 5.0
    zeros_col = X.copy()
    zeros_col[:, 3] = 0.0
    return {
        "duplicates": (dup, y), "near_parallel": (near, y),
        "rank_deficient": (np.hstack([X[:, :3], X[:, :3] * 2, X[:, :2]]), y),
        "huge": (X * 1e18, y), "tiny": (X * 1e-18, y),
        "denormal": (X * 1e-310, y), "float32_denormal": ((X * 1e-40).astype(np.float32), y),
        "constant_feature": (const, y), "zero_feature": (zeros_col, y),
        "float16": (X.astype(np.float16), y),
        "single_class_batches": (X, np.sort(y)),
        "all_zero_rows": (np.vstack([np.zeros((40, 8)), X[40:]]), y),
    }


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_learner_edge_cases(name, dtype):
    X, y = CASES[name]
    lr = TinyDLClassifier(**PARAMS, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            for s in range(0, len(X), 50):
                lr.partial_fit(X[s:s + 50], y[s:s + 50], classes=np.array([0, 1]))
            lr.finish()
        except (ValueError, TypeError) as exc:
            assert str(exc)  # a typed error with a message
            return
        P = lr.predict_proba(X[:20])
    assert np.all(np.isfinite(P)), f"{name}: non-finite probabilities"
    D = lr.transform_.dictionary_
    assert np.all(np.isfinite(D)), f"{name}: non-finite dictionary"


@pytest.mark.parametrize("name", sorted(CASES))
def test_transform_edge_cases(name):
    X, _ = CASES[name]
    sd = StreamingDictionary(l=10, k=3, alpha=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            Z = sd.partial_fit_transform(X)
        except (ValueError, TypeError) as exc:
            assert str(exc)
            return
    assert np.all(np.isfinite(np.asarray(Z))), f"{name}: non-finite codes"
    assert np.all(np.isfinite(sd.dictionary_))
