"""Shared pieces of the MPI test programs (run under mpiexec by tests/mpi/test_mpi.py)."""
import os
import sys

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

# the repository root, so that the programs import this checkout's tinydl and hal
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))

PARAMS = dict(l=24, k=5, alpha=0.3, hidden_layer_sizes=(16,), window=512, n_batch=128,
              epochs_per_update=3, learning_rate=0.05, standardize=True, seed=3, dtype="float32")


def stream(n=1200, m=48, classes=4, seed=0):
    """A synthetic labelled stream: class-dependent sparse mixtures of 40 patterns + noise."""
    rng = np.random.default_rng(seed)
    rng_c = np.random.default_rng(1234)  # the same classes in every stream
    patterns = rng_c.standard_normal((40, m))
    centers = 1.5 * rng_c.standard_normal((classes, m))
    y = rng.integers(0, classes, n)
    X = np.empty((n, m))
    for i in range(n):
        pick = rng.choice(10, 3, replace=False) + 10 * y[i]
        X[i] = centers[y[i]] + rng.standard_normal(3) @ patterns[pick]
    X += 0.2 * rng.standard_normal((n, m))
    return X.astype(np.float32), y


def batches(n, sizes=(100, 37, 256, 1, 64, 300)):
    """Uneven cut points: (start, end) pairs covering range(n)."""
    out, s, i = [], 0, 0
    while s < n:
        e = min(n, s + sizes[i % len(sizes)])
        out.append((s, e))
        s, i = e, i + 1
    return out


def window_codes(learner):
    """The learner's code window, whatever its layout (compact or dense)."""
    if hasattr(learner, "codes_indices_"):
        return {"win_idx": learner.codes_indices_, "win_val": learner.codes_values_}
    return {"win_codes": learner.codes_window_}
