"""compress_model, from_network and load_model refuse what they cannot use before any work,
naming it: labels of the wrong shape (a (n, 1) column compared by broadcasting gave a wrong
accuracy), empty data, targets that are not positive numbers, an unfitted network, a file
whose weights are not finite; the model given is left as it was."""
from __future__ import annotations

import numpy as np
import pytest

from tinydl.compress import compress_model, from_network
from tinydl.compress.files import load_model, save_model
from tinydl.errors import ModelFileError, NotFittedError
from tinydl.nn import MLPClassifier


@pytest.fixture(scope="module")
def small(digits_split):
    Xtr, ytr, Xv, yv = digits_split[:4]
    clf = MLPClassifier((16,), epochs=2, seed=0).fit(Xtr, ytr)
    return from_network(clf), Xv, yv


def _arrays(cm):
    return [a.copy() for la in cm.layers for a in la.arrays.values()]


@pytest.mark.parametrize("kw,match", [
    (dict(y=lambda y: y[:, None]), r"y_val should be one label per sample, shape \(n,\), got "
                                   r"shape \(300, 1\)"),
    (dict(X=lambda X: X[:0], y=lambda y: y[:0]), "X_val is empty"),
    (dict(X_fit=lambda X: X[:0]), "X_fit is empty"),
    (dict(max_memory=float("nan")), "max_memory must be a positive number"),
    (dict(max_memory=0), "max_memory must be a positive number"),
    (dict(max_time=float("nan"), profile="cortex-m3"), "max_time must be a positive number"),
    (dict(batch=0), r"batch must be in \[1, inf\], got 0"),
    (dict(batch=-5), r"batch must be in \[1, inf\], got -5"),
    (dict(n_iter=-3, method="sparse"), r"n_iter must be in \[1, inf\], got -3")])
def test_refused_before_any_work_and_the_model_unchanged(small, kw, match):
    cm, Xv, yv = small
    before = _arrays(cm)
    kw = dict(kw)
    X = kw.pop("X", lambda X: X)(Xv)
    y = kw.pop("y", lambda y: y)(yv)
    if "X_fit" in kw:
        kw["X_fit"] = kw["X_fit"](Xv)
    with pytest.raises(ValueError, match=match):
        compress_model(cm, X, y, 0.02, **kw)
    assert all(np.array_equal(a, b) for a, b in zip(before, _arrays(cm)))


def test_an_unfitted_network_is_not_fitted():
    with pytest.raises(NotFittedError, match="no trained layers: fit it"):
        from_network(MLPClassifier((8,)))
    with pytest.raises(TypeError, match="model must be a CompressedModel"):
        compress_model(MLPClassifier((8,)), np.zeros((3, 4)), np.zeros(3), 0.01)


def test_a_file_with_non_finite_weights_is_refused_on_load(small, tmp_path):
    cm = small[0]
    cm.layers[0].arrays["W"] = cm.layers[0].arrays["W"].copy()
    w = cm.layers[0].arrays["W"]
    keep = w.flat[5]
    try:
        w.flat[5] = np.nan
        save_model(cm, tmp_path / "nan.npz")  # a valid checksum over a NaN weight
    finally:
        w.flat[5] = keep
    with pytest.raises(ModelFileError, match=r"nan.npz: layer 0 .* has 1 NaN/Inf value"):
        load_model(tmp_path / "nan.npz")
