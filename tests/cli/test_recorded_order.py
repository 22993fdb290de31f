"""A stream in recorded order learns what the shuffled stream learns (issue 15).

Real data: Daily and Sports Activities (/work/shared/data/dsa_subset20_f16.npz, or
$TINYDL_DATA), ``X.reshape(n, 5625)``.  The split: a stratified 80/20 split with
``numpy.random.default_rng(0)`` (per activity, a permutation of its segments; the first fifth
is the test set), written as X_train/y_train (sorted by activity, stable: the recorded order of
a session that records one activity after another) and X_test/y_test.  ``tinydl fit`` in file
order and with ``--shuffle 0`` (the plan the customizer picks, no per-file tuning), then
``tinydl evaluate``: the recorded order must be within 2 points of the shuffled stream (the
paper's policy, a sliding window and statistics and dictionary from the first samples, gets
.45 against .91).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DSA = os.path.join(os.environ.get("TINYDL_DATA", "/work/shared/data"), "dsa_subset20_f16.npz")


def tinydl(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "tinydl", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def sorted_dsa(tmp_path_factory):
    if not os.path.exists(DSA):
        pytest.skip(f"the Daily and Sports subset is absent ({DSA}): see "
                    "/work/shared/data/README.md")
    with np.load(DSA, allow_pickle=False) as z:
        X = z["X"].reshape(len(z["X"]), -1).astype(np.float32)
        y = z["y"].astype(np.int64)
    rng = np.random.default_rng(0)
    test = np.zeros(len(y), bool)
    for c in np.unique(y):
        i = np.flatnonzero(y == c)
        test[rng.permutation(i)[:len(i) // 5]] = True
    train = np.flatnonzero(~test)
    train = train[np.argsort(y[train], kind="stable")]
    path = tmp_path_factory.mktemp("dsa") / "dsa_sorted.npz"
    np.savez(path, X_train=X[train], y_train=y[train], X_test=X[test], y_test=y[test])
    return path


def _accuracy(data, model, *extra):
    r = tinydl("fit", data, "-o", model, "--quiet", *extra)
    assert r.returncode == 0, r.stderr
    e = tinydl("evaluate", model, "--data", data, "--json")
    assert e.returncode == 0, e.stderr
    return json.loads(e.stdout)["accuracy"], r.stderr


def test_sorted_daily_and_sports_within_two_points_of_shuffled(sorted_dsa, tmp_path):
    recorded, warning = _accuracy(sorted_dsa, tmp_path / "recorded")
    assert "labels arrive in blocks" in warning
    shuffled, _ = _accuracy(sorted_dsa, tmp_path / "shuffled", "--shuffle", 0)
    assert shuffled > 0.8, shuffled
    assert recorded >= shuffled - 0.02, (recorded, shuffled)
