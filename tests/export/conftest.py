"""Fixtures of the C export's tests: the toolchains (a skip here, a failure in CI, where
``TINYDL_REQUIRE_ARM=1``) and a small TinyDL model on a real UJIIndoorLoc slice."""
import os

import numpy as np
import pytest

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
