"""Fixtures of the C export's tests: the toolchains (a skip here, a failure in CI, where
``TINYDL_REQUIRE_ARM=1``) and a small TinyDL model on a real UJIIndoorLoc slice."""
import os

import numpy as np
import pytest

from tinydl.compress import CompressedModel
from tinydl.compress.model import make_layer
from tinydl.export import toolchain as tc


def need_tools(*names):
    """Skip unless the named tools (see :func:`tinydl.export.toolchain.tools`) are installed;
    with ``TINYDL_REQUIRE_ARM=1`` (CI) a missing one fails the test instead."""
    t = tc.tools()
    missing = [n for n in names if not t[n]]
    if missing:
        why = f"not installed: {', '.join(missing)} (apt-get install gcc-arm-none-eabi " \
              "picolibc-arm-none-eabi qemu-system-arm)"
        if os.environ.get("TINYDL_REQUIRE_ARM") == "1":
            pytest.fail(f"TINYDL_REQUIRE_ARM=1 but {why}")
        pytest.skip(why)


@pytest.fixture(scope="session")
def uji_slice(request):
    """(model, X_test, y_test): TinyDL trained on 3,000 shuffled training rows of the shared
    UJIIndoorLoc file (its conversion), tested on the first 120 validation rows."""
    from tests.conftest import shared_data_dir
    from tinydl.data import uji_rssi_to_features
    from tinydl.learner import TinyDLClassifier
    d = shared_data_dir()
    if d is None or not (d / "ujiindoorloc.npz").is_file():
        pytest.skip("real datasets absent: ujiindoorloc.npz not in $TINYDL_DATA or "
                    "../shared/data")
    with np.load(d / "ujiindoorloc.npz", allow_pickle=False) as z:
        Xtr, ytr = uji_rssi_to_features(z["X_train"]), z["y_train"].astype(np.int64)
        Xte, yte = uji_rssi_to_features(z["X_test"][:120]), z["y_test"][:120].astype(np.int64)
    rows = np.random.default_rng(0).permutation(len(Xtr))[:3000]
    clf = TinyDLClassifier(l=50, k=10, hidden_layer_sizes=(32, 16), window=1024, n_batch=500,
                           seed=0).fit(Xtr[rows], ytr[rows])
    return clf, Xtr[rows], Xte, yte


def all_kinds_model():
    """(model, X): a random CompressedModel with every layer kind (convolution with stride and
    padding, kernel separation, pools, every activation, factored, sparse, dense, softmax)."""
    rng = np.random.default_rng(0)

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32) * 0.3

    F, r_ = 4, 2
    S = (rng.random((6, 20)) < 0.4) * r(6, 20)
    cols = [np.flatnonzero(S[:, j]) for j in range(20)]
    indptr = np.concatenate([[0], np.cumsum([len(c) for c in cols])]).astype(np.int32)
    layers = [make_layer("conv", W=r(3, 2, 3, 3), b=r(3), stride=[1, 2], padding=[1, 1]),
              make_layer("tanh"),
              make_layer("kernel_separated", v=r(3, F * r_, 3), h=r(F, 3 * r_, 2), b=r(F),
                         stride=[1, 1], padding=[1, 0]),
              make_layer("maxpool", pool_size=[2, 2], stride=[2, 1]),
              make_layer("relu"), make_layer("avgpool", pool_size=[1, 2]),
              make_layer("flatten"),
              make_layer("factored", U=r(16, 5), V=r(5, 30), b=r(30)), make_layer("sigmoid"),
              make_layer("sparse_factored", B=r(30, 6),
                         data=np.concatenate([S[c, j] for j, c in enumerate(cols)]),
                         indices=np.concatenate(cols).astype(np.uint16), indptr=indptr,
                         b=r(20), n_out=20),
              make_layer("relu"), make_layer("dense", W=r(20, 5), b=r(5)),
              make_layer("softmax")]
    X = rng.standard_normal((25, 2 * 9 * 8)).astype(np.float32)
    return CompressedModel(layers, (2, 9, 8)), X


@pytest.fixture(scope="session")
def digits_model():
    """(model, X_train, X_test, y_test): a small TinyDL model on the bundled digits (always
    present, so the toolchain tests run wherever the tools are)."""
    from tinydl.data import load_dataset
    from tinydl.learner import TinyDLClassifier
    d = load_dataset("digits")
    clf = TinyDLClassifier(l=32, k=5, hidden_layer_sizes=(16,), window=512, n_batch=256,
                           seed=0).fit(d.X_train, d.y_train)
    return clf, d.X_train, d.X_test[:40], d.y_test[:40]
