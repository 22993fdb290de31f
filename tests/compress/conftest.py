import numpy as np
import pytest

from tinydl.data import load_dataset
from tinydl.nn import MLPClassifier


@pytest.fixture(scope="session")
def digits_split():
    """Digits: train (958), validation (300, for the compiler) and test (539) splits."""
    d = load_dataset("digits")
    X, Xt = (d.X_train / 16).astype(np.float32), (d.X_test / 16).astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(X))
    tr, va = perm[300:], perm[:300]
    return X[tr], d.y_train[tr], X[va], d.y_train[va], Xt, d.y_test


@pytest.fixture(scope="session")
def trained_mlp(digits_split):
    Xtr, ytr = digits_split[:2]
    clf = MLPClassifier((128, 64), loss="cross_entropy", optimizer="adam", learning_rate=1e-3,
                        epochs=15, batch_size=32).fit(Xtr, ytr)
    return clf
