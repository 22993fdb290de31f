"""A network retrained along a stream keeps a bounded loss curve (``loss_curve_len``) while
``n_epochs_`` counts every pass and seeds its shuffle, so the bound changes no result; the
count and the bound survive save / load."""
import numpy as np

from tinydl.nn import MLPClassifier


def _data(seed=0, n=120, m=6):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, m)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(int)


def test_bounded_curve_same_weights_and_count(tmp_path):
    X, y = _data()
    free = MLPClassifier(hidden_layer_sizes=(8,), batch_size=16, epochs=1, seed=3)
    held = MLPClassifier(hidden_layer_sizes=(8,), batch_size=16, epochs=1, seed=3)
    held.loss_curve_len = 4
    for _ in range(10):
        free.partial_fit(X, y, classes=[0, 1])
        held.partial_fit(X, y, classes=[0, 1])
    assert free.n_epochs_ == held.n_epochs_ == 10 == len(free.loss_curve_)
    assert held.loss_curve_ == free.loss_curve_[-4:]
    np.testing.assert_array_equal(held.network_.params, free.network_.params)
    path = str(tmp_path / "net.npz")
    held.save(path)
    back = MLPClassifier.load(path)
    assert back.n_epochs_ == 10 and back.loss_curve_len == 4
    assert back.loss_curve_ == held.loss_curve_
    back.partial_fit(X, y)
    held.partial_fit(X, y)
    np.testing.assert_array_equal(back.network_.params, held.network_.params)
    assert len(back.loss_curve_) == 4


def test_the_learner_bounds_its_network_curve():
    from tinydl.learner import LOSS_CURVE_LEN, TinyDLClassifier
    X, y = _data(1, n=400, m=20)
    clf = TinyDLClassifier(l=10, k=3, hidden_layer_sizes=(8,), n_batch=8, window=64,
                           epochs_per_update=2, seed=0).fit(X, y)
    net = clf.network_
    assert net.loss_curve_len == LOSS_CURVE_LEN
    assert net.n_epochs_ > LOSS_CURVE_LEN and len(net.loss_curve_) == LOSS_CURVE_LEN
