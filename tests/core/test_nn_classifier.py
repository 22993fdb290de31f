"""MLPClassifier / CNNClassifier: learning on real data (scikit-learn's estimator checks:
tests/core/test_sklearn_compat.py), memory footprint, incremental training, bad input,
divergence and save/load."""
import os
import tracemalloc

import numpy as np
import pytest

from tinydl.io import ModelFileError
from tinydl.nn import CNNClassifier, DivergenceError, MLPClassifier, NotFittedError
from tinydl.omp import SparseCodes


@pytest.fixture(scope="module")
def digits():
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn not installed")
    X, y = datasets.load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    X, y = X[order], y[order]
    return X[:1300], y[:1300], X[1300:], y[1300:]


def test_mlp_learns_digits(digits):
    """UCI's handwritten digits (bundled with scikit-learn): (64, 32) ReLU MLP, the paper's
    L2 loss, SGD with momentum, 40 epochs of batch 32: at least 95% on 497 held-out images."""
    Xtr, ytr, Xte, yte = digits
    clf = MLPClassifier(hidden_layer_sizes=(64, 32), epochs=40, seed=0).fit(Xtr, ytr)
    assert clf.score(Xte, yte) >= 0.95
    assert clf.loss_curve_[-1] < clf.loss_curve_[0] / 3


def test_cnn_learns_digits(digits):
    """A 2-D CNN on the same 8 x 8 images: conv(8, 3x3) -> ReLU -> pool 2 -> 32 -> 10,
    cross-entropy, 15 epochs: at least 93%."""
    Xtr, ytr, Xte, yte = digits
    clf = CNNClassifier(input_shape=(1, 8, 8), conv_layers=((8, 3, 2),), epochs=15).fit(Xtr, ytr)
    assert clf.score(Xte, yte) >= 0.93


def _load_uji(shared_data):
    path = shared_data / "ujiindoorloc.npz"
    if not path.exists():
        pytest.skip(f"UJIIndoorLoc absent: {path} does not exist")
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        if {"X_train", "y_train", "X_test", "y_test"} <= keys:
            return z["X_train"], z["y_train"], z["X_test"], z["y_test"]
        if {"X", "y"} <= keys:  # one array: UCI's files are 19937 training + 1111 validation
            X, y = z["X"], z["y"]
            return X[:19937], y[:19937], X[19937:], y[19937:]
    pytest.skip(f"{path} has keys {sorted(keys)}, none of the layouts this test knows")


def test_mlp_reaches_90_percent_on_ujiindoorloc(shared_data):
    """520 WiFi RSSI features -> 13 building-floor classes; (256, 128) ReLU MLP, the paper's
    L2 loss, SGD with momentum, 20 epochs, on UCI's validation split: at least 90%."""
    Xtr, ytr, Xte, yte = _load_uji(shared_data)

    def prep(X):  # RSSI in dBm, 100 = not detected: map to [0, 1], 0 = absent
        X = np.asarray(X, np.float64)
        return np.where(X == 100, 0.0, (X + 105.0) / 105.0).clip(0, 1).astype(np.float32)

    clf = MLPClassifier(hidden_layer_sizes=(256, 128), epochs=20, learning_rate=0.01,
                        seed=0).fit(prep(Xtr), ytr)
    assert clf.score(prep(Xte), yte) >= 0.90


def test_footprint_matches_tracemalloc_peak():
    """The footprint reported before training is within 15% of tracemalloc's peak."""
    rng = np.random.default_rng(0)
    n, m, c = 4000, 100, 19
    X = rng.standard_normal((n, m)).astype(np.float32)
    y = rng.integers(0, c, n)
    for hidden, batch, opt in [((64, 32), 32, "sgd"), ((256, 128), 128, "adam"),
                               ((64, 32), 512, "sgd")]:
        clf = MLPClassifier(hidden_layer_sizes=hidden, batch_size=batch, optimizer=opt,
                            epochs=2, dropout=0.1, learning_rate=1e-3)
        fp = clf.footprint(batch, m, c, n_samples=n)
        tracemalloc.start()
        clf.fit(X, y)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert clf.n_params_ * 4 == fp["parameters"]
        assert abs(peak - fp["total"]) <= 0.15 * fp["total"], (hidden, batch, opt, peak, fp)


def test_dense_training_step_allocates_no_array_data():
    """A step allocates nothing that grows with the batch: what tracemalloc sees is NumPy's
    own fixed-size ufunc iteration buffer (8192 elements, for the broadcast bias add) and
    small Python objects, against 512 KiB for one activation at batch 512."""
    rng = np.random.default_rng(0)
    for batch in (64, 512):
        X = rng.standard_normal((batch, 100)).astype(np.float32)
        y = rng.integers(0, 19, batch)
        for opt in ("sgd", "adam"):
            clf = MLPClassifier(hidden_layer_sizes=(256, 128), dropout=0.2, batch_size=batch,
                                epochs=1, optimizer=opt, loss="cross_entropy").fit(X, y)
            net, loss, optim = clf.network_, clf.loss_fn_, clf.optimizer_
            tracemalloc.start()
            for _ in range(5):  # exactly the work of one training step
                out = net.forward(X, train=True)
                _, g = loss(out, y)
                g *= optim.grad_scale
                net.backward(g)
                optim.step(net.params, net.grads)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert peak < 8192 * 8 + 8192, (batch, opt, peak)


def test_partial_fit_continues_from_current_weights(digits):
    Xtr, ytr, Xte, yte = digits
    # float64: summation order depends on memory alignment, and training amplifies float32
    # rounding differences; the check is "starts over", not bit-identity
    a = MLPClassifier(epochs=3, seed=1, dtype="float64").fit(Xtr, ytr)
    b = MLPClassifier(epochs=1, seed=1)
    b.partial_fit(Xtr[:10], ytr[:10], classes=np.arange(10))
    before = b.network_.params.copy()
    for _ in range(5):
        b.partial_fit(Xtr, ytr)
    assert not np.array_equal(before, b.network_.params)
    assert b.score(Xte, yte) > 0.85
    # a fresh fit starts over: its weights do not depend on earlier calls
    c = MLPClassifier(epochs=3, seed=1, dtype="float64")
    c.partial_fit(Xtr, ytr, classes=np.arange(10))
    c.fit(Xtr, ytr)
    np.testing.assert_allclose(c.network_.params, a.network_.params, atol=1e-9)


def test_sparse_codes_input_matches_dense_codes():
    rng = np.random.default_rng(2)
    n, l, k = 600, 100, 20
    idx = np.stack([rng.choice(l, k, replace=False) for _ in range(n)]).astype(np.int32)
    vals = rng.standard_normal((n, k)).astype(np.float32)
    w = rng.standard_normal(l)
    codes = SparseCodes(idx, vals, l)
    dense = codes.to_dense()
    y = (dense @ w > 0).astype(int)
    for mode in ("gather", "dense", "auto"):
        s = MLPClassifier(epochs=20, sparse_product=mode, loss="cross_entropy",
                          dtype="float64").fit(codes, y)
        d = MLPClassifier(epochs=20, loss="cross_entropy", dtype="float64").fit(dense, y)
        np.testing.assert_allclose(s.network_.params, d.network_.params, atol=1e-8)
        np.testing.assert_array_equal(s.predict(codes), d.predict(dense))
    assert s.score(codes, y) > 0.8


@pytest.mark.parametrize("case,exc,match", [
    ("labels", ValueError, r"label\(s\) \[7\] not in classes"),
    ("lengths", ValueError, "X has 50 samples but y has 49"),
    ("nan", ValueError, "NaN"),
    ("unknown", ValueError, r"not in classes \[0, 1, 2\]"),
    ("classes", ValueError, "classes must be given"),
    ("features", ValueError, "X has 6 features, but MLPClassifier is expecting 5"),
    ("continuous", ValueError, "Unknown label type"),
])
def test_bad_input_gives_clear_errors(case, exc, match):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 5)).astype(np.float32)
    y = rng.integers(0, 3, 50)
    clf = MLPClassifier(epochs=1)
    with pytest.raises(exc, match=match):
        if case == "labels":
            clf.partial_fit(X, np.where(y == 0, 7, y), classes=[0, 1, 2])
        elif case == "lengths":
            clf.fit(X, y[:49])
        elif case == "nan":
            X[3, 2] = np.nan
            clf.fit(X, y)
        elif case == "unknown":
            clf.partial_fit(X, y, classes=[0, 1, 2])
            clf.partial_fit(X, np.full(50, 5))
        elif case == "classes":
            clf.partial_fit(X, y)
        elif case == "features":
            clf.fit(X, y).predict(np.zeros((2, 6)))
        elif case == "continuous":
            clf.fit(X, y + 0.5)


def test_bad_parameters_name_the_parameter():
    X, y = np.zeros((4, 2)), np.array([0, 1, 0, 1])
    for kw, match in [({"learning_rate": -1.0}, "learning_rate"), ({"loss": "hinge"}, "loss"),
                      ({"dropout": 1.0}, "dropout"), ({"batch_size": 0}, "batch_size")]:
        with pytest.raises(ValueError, match=match):
            MLPClassifier(**kw).fit(X, y)
    with pytest.raises(NotFittedError):
        MLPClassifier().predict(X)


def test_divergence_raises_and_keeps_last_good_weights():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 10)).astype(np.float32) * 1e3
    y = rng.integers(0, 3, 256)
    clf = MLPClassifier(epochs=1, learning_rate=0.01)
    clf.partial_fit(X[:32] * 1e-3, y[:32], classes=[0, 1, 2])
    with pytest.raises(DivergenceError, match="diverged"):
        for _ in range(50):
            clf.set_params(learning_rate=1e6)
            clf.optimizer_.learning_rate = 1e6
            clf.partial_fit(X, y)
    assert np.isfinite(clf.network_.params).all()
    assert np.isfinite(clf.predict_proba(X)).all()


def test_save_load_roundtrip_and_damaged_files(tmp_path, digits):
    Xtr, ytr, Xte, yte = digits
    labels = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven",
                       "eight", "nine"])[ytr]
    clf = MLPClassifier(epochs=3, dropout=0.1, optimizer="adam", learning_rate=1e-3)
    clf.fit(Xtr, labels)
    path = tmp_path / "m.npz"
    clf.save(path)
    back = MLPClassifier.load(path)
    np.testing.assert_array_equal(back.predict_proba(Xte), clf.predict_proba(Xte))
    assert back.get_params() == clf.get_params()
    # both continue identically (optimizer state and step count were saved)
    clf.partial_fit(Xtr[:64], labels[:64])
    back.partial_fit(Xtr[:64], labels[:64])
    np.testing.assert_allclose(back.network_.params, clf.network_.params, atol=1e-6)

    cnn = CNNClassifier(input_shape=(1, 8, 8), epochs=1).fit(Xtr, ytr)
    cnn.save(tmp_path / "c.npz")
    np.testing.assert_array_equal(CNNClassifier.load(tmp_path / "c.npz").predict(Xte),
                                  cnn.predict(Xte))

    raw = path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[:len(raw) // 2])
    with pytest.raises(ModelFileError, match="not a readable"):
        MLPClassifier.load(tmp_path / "trunc.npz")
    # flip one byte inside the stored parameters: the checksum catches it
    data = dict(np.load(path, allow_pickle=False))
    data["params"] = data["params"].copy()
    data["params"][3] += 1e-3
    np.savez(tmp_path / "tampered.npz", **data)
    with pytest.raises(ModelFileError, match="checksum"):
        MLPClassifier.load(tmp_path / "tampered.npz")
    assert not any(name.startswith(".tmp-") for name in os.listdir(tmp_path))
