"""The TinyDL learner: schedule invariance, checkpoints that resume exactly, clear errors."""
import numpy as np
import pytest

from tinydl.data import load_dataset
from tinydl.learner import TinyDLClassifier


def _small():
    ds = load_dataset("digits")
    return ds.X_train[:600], ds.y_train[:600], ds.X_test, ds.y_test


def _learner(**kw):
    params = dict(l=24, k=6, alpha=0.5, hidden_layer_sizes=(16,), window=256, n_batch=100,
                  epochs_per_update=3, seed=3, dtype="float64")
    params.update(kw)
    return TinyDLClassifier(**params)


def test_same_model_whatever_the_batch_sizes():
    X, y, Xte, _ = _small()
    classes = np.arange(10)
    a = _learner()
    for s in range(0, len(X), 37):
        a.partial_fit(X[s:s + 37], y[s:s + 37], classes=classes)
    b = _learner()
    b.partial_fit(X, y, classes=classes)
    assert a.n_updates_ == b.n_updates_ == len(X) // 100
    assert np.array_equal(a.transform_.dictionary_, b.transform_.dictionary_)
    assert np.array_equal(a.predict_proba(Xte), b.predict_proba(Xte))


def test_learns_the_bundled_digits():
    ds = load_dataset("digits")
    c = _learner(l=40, k=10, window=1258, n_batch=200, epochs_per_update=10, dtype="float32")
    c.fit(ds.X_train, ds.y_train)
    # far above chance (10%); the raw-feature comparison is the demo's job
    assert c.score(ds.X_test, ds.y_test) > 0.8


def test_checkpoint_resumes_to_the_same_model(tmp_path):
    X, y, Xte, _ = _small()
    classes = np.arange(10)
    ref = _learner()
    ref.partial_fit(X, y, classes=classes)

    a = _learner()
    a.partial_fit(X[:250], y[:250], classes=classes)
    a.save(tmp_path / "ck")
    a.partial_fit(X[250:400], y[250:400])     # work after the checkpoint is lost...
    b = TinyDLClassifier.load(tmp_path / "ck")  # ...and redone from the checkpoint
    assert b.n_samples_seen_ + len(b._pending_X) == 250  # coded + held for standardization
    b.partial_fit(X[250:], y[250:])
    assert np.array_equal(b.transform_.dictionary_, ref.transform_.dictionary_)
    assert np.array_equal(b.predict_proba(Xte), ref.predict_proba(Xte))


def test_errors_leave_the_learner_untouched():
    X, y, _, _ = _small()
    c = _learner()
    with pytest.raises(ValueError, match="classes must be given"):
        c.partial_fit(X[:10], y[:10])
    c.partial_fit(X[:300], y[:300], classes=np.arange(10))
    seen, d = c.n_samples_seen_, c.transform_.dictionary_.copy()
    with pytest.raises(ValueError, match="outside classes"):
        c.partial_fit(X[:5], np.array([0, 1, 2, 3, 42]))
    with pytest.raises(ValueError, match="features"):
        c.partial_fit(X[:5, :10], y[:5])
    bad = X[:5].copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        c.partial_fit(bad, y[:5])
    with pytest.raises(ValueError, match="one label per sample"):
        c.partial_fit(X[:5], y[:4])
    assert c.n_samples_seen_ == seen
    assert np.array_equal(c.transform_.dictionary_, d)


def test_predict_before_training_is_a_clear_error():
    with pytest.raises(ValueError, match="not been trained"):
        _learner().predict(np.zeros((1, 64)))
