"""Fault-injection helpers shared by tests/faults and ``benchmarks/reliability.py``.

* :func:`fit_argv` / :func:`compress_argv`: the CLI runs that get killed;
* :func:`run_cli_forked`: ``tinydl.cli.main(argv)`` in a forked child (no interpreter start-up,
  so kill points land inside the work), returning the :class:`multiprocessing.Process`;
* :func:`checkpoint_arrays` / :func:`same_model`: every array of the checkpoint ``LATEST``
  names, compared with ``np.array_equal``.
"""
from __future__ import annotations

import io
import multiprocessing
import os
import sys
import zipfile

import numpy as np

FIT_OPTS = ["--l", "12", "--k", "3", "--alpha", "0.3", "--hidden", "8", "--window", "64",
            "--n-batch", "32", "--epochs", "1", "--seed", "0", "--chunk", "50", "--quiet",
            "--backend", "numpy"]


def make_stream(path, n=600, m=10, seed=0):
    """A labelled stream with duplicate and near-parallel rows (rank-deficient on purpose)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, m)).astype(np.float32)
    X[5::7] = X[3]                                   # exact duplicates
    X[6::11] = X[4] * (1 + 1e-6)                     # near-parallel
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    np.savez(path, X_train=X, y_train=y)
    return path


def fit_argv(data, out, every=40, resume=False):
    return ["fit", os.fspath(data), "-o", os.fspath(out), "--checkpoint-every", str(every),
            *FIT_OPTS] + (["--resume"] if resume else [])


def compress_argv(model, val, out):
    return ["compress", os.fspath(model), "--data", os.fspath(val), "--max-accuracy-loss",
            "0.05", "-o", os.fspath(out)]


def _child(argv, quiet):
    if quiet:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    from tinydl.cli import main
    code = main(list(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code or 0))


def run_cli_forked(argv, quiet=True):
    """Start ``tinydl <argv>`` in a forked child; return the started Process."""
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_child, args=(list(argv), quiet))
    p.start()
    return p


def latest_dir(model_dir):
    with open(os.path.join(model_dir, "LATEST")) as fh:
        return os.path.join(model_dir, fh.read().strip())


def npz_arrays(path):
    with open(path, "rb") as fh:
        raw = fh.read()
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def checkpoint_arrays(model_dir):
    """{file/key: array} for every ``.npz`` of the checkpoint ``LATEST`` names."""
    target = latest_dir(model_dir)
    out = {}
    for name in sorted(os.listdir(target)):
        if name.endswith(".npz"):
            for k, v in npz_arrays(os.path.join(target, name)).items():
                out[f"{name}/{k}"] = v
    return out


def diff_arrays(a, b):
    """Keys whose arrays differ (np.array_equal on every saved array), or are missing."""
    keys = sorted(set(a) | set(b))
    return [k for k in keys if k not in a or k not in b or not identical(a[k], b[k])]


def identical(a, b):
    """np.array_equal, with NaN equal to NaN (a saved ``tol=None`` is NaN), and the same
    dtype and shape: bit-for-bit the same array."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True)) and a.tobytes() == b.tobytes()
    return bool(np.array_equal(a, b))


def same_model(dir_a, dir_b):
    return not diff_arrays(checkpoint_arrays(dir_a), checkpoint_arrays(dir_b))


def latest_samples(model_dir):
    """Samples covered by the checkpoint ``LATEST`` names (0 if none)."""
    try:
        return int(os.path.basename(latest_dir(model_dir)).split("-")[1])
    except (OSError, ValueError):
        return 0


def zip_ok(path):
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False
