"""The learner's stages on their own: the standardizer (one hold-back buffer), the code window,
the checkpoint protocol, the timing hooks, and the floor plan's import rules."""
import ast
import json
import os
import pathlib

import numpy as np
import pytest

from tinydl import checkpoint
from tinydl.codes import SparseCodes
from tinydl.errors import ModelFileError, NotFittedError
from tinydl.learner import TinyDLClassifier
from tinydl.standardize import Standardizer, apply_stats, fit_stats
from tinydl.window import CodeWindow

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_standardizer_holds_back_then_matches_the_statistics_of_the_first_rows():
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((50, 4)) * [1, 2, 3, 0] + [5, 0, -1, 7]).astype(np.float32)
    s = Standardizer(4, n_standardize=20, dtype="float32")
    assert s.push(X[:7], np.arange(7)) is None and s.n_pending == 7
    with pytest.raises(NotFittedError, match="7 of n_standardize=20"):
        s.transform(X)
    out, y = s.push(X[7:30], np.arange(7, 30))
    mean, scale = fit_stats(X[:20], np.float32)
    assert np.array_equal(out, apply_stats(X[:30], mean, scale))
    assert np.array_equal(y, np.arange(30)) and s.n_pending == 0
    assert scale[3] == 1  # a constant feature is only centred
    out, _ = s.push(X[30:])
    assert np.array_equal(out, apply_stats(X[30:], mean, scale))


def test_standardizer_flush_and_state_roundtrip():
    X = np.arange(30, dtype=np.float64).reshape(10, 3)
    s = Standardizer(3, n_standardize=256, dtype="float64")
    s.push(X[:4], np.arange(4))
    t = Standardizer.from_state(s.state(), 3, 256, "float64", True)
    assert t.n_pending == 4
    out, y = t.flush()
    assert np.array_equal(out, apply_stats(X[:4], *fit_stats(X[:4], np.float64)))
    assert t.flush() is None and t.ready
    off = Standardizer(3, enabled=False)
    out, _ = off.push(X)
    assert out is X and off.ready


def test_code_window_is_a_ring_in_arrival_order():
    w = CodeWindow(size=4, k=2, n_atoms=10, dtype="float32")
    for start in range(0, 6, 3):
        idx = np.arange(start, start + 3)[:, None].repeat(2, 1).astype(np.int32)
        w.push(SparseCodes(idx, idx.astype(np.float32), 10), np.arange(start, start + 3))
    codes, labels = w.view()
    assert np.array_equal(labels, [2, 3, 4, 5]) and np.array_equal(codes.indices[:, 0], labels)
    again = CodeWindow.from_state(w.state(), 4, 2, 10, "float32")
    assert np.array_equal(again.view()[1], labels)
    with pytest.raises(ModelFileError, match="shape"):
        CodeWindow.from_state(w.state(), 5, 2, 10, "float32")


def test_checkpoint_protocol(tmp_path):
    d = tmp_path / "ck"
    with pytest.raises(ModelFileError, match="no checkpoint"):
        checkpoint.latest(d)
    a = checkpoint.write(d, 10, lambda t: open(os.path.join(t, "x"), "w").write("a"))
    b = checkpoint.write(d, 10, lambda t: open(os.path.join(t, "x"), "w").write("b"))
    assert os.path.basename(b) == os.path.basename(a) + "-1" and not os.path.exists(a)
    files = checkpoint.read(d)
    assert files[f"{os.path.basename(b)}/x"] == b"b"
    (d / "LATEST").write_text("../etc\n")
    with pytest.raises(ModelFileError, match="not a checkpoint"):
        checkpoint.read(d)
    p = {"hidden_layer_sizes": (3, 2), "alpha": 0.1 + 0.2, "dtype": "float32", "x": None}
    arr = checkpoint.params_to_json(p)
    assert json.loads(str(arr))["hidden_layer_sizes"] == [3, 2]
    assert checkpoint.params_from_json(arr)["alpha"] == p["alpha"]


def test_timing_hooks_are_called_around_transform_and_training():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 8)).astype(np.float32)
    y = rng.integers(0, 3, 300)

    class Count:
        def __init__(self):
            self.n = 0

        def __enter__(self):
            self.n += 1

        def __exit__(self, *exc):
            return False

    updates = []
    c = TinyDLClassifier(l=8, k=2, hidden_layer_sizes=(4,), window=64, n_batch=100,
                         epochs_per_update=2, backend="numpy")
    c.transform_timer, c.train_timer = Count(), Count()
    c.on_update = lambda lr: updates.append(lr.n_samples_seen_)
    c.fit(X, y)
    assert updates == [100, 200, 300] and c.train_timer.n == 3
    assert c.transform_timer.n >= 2  # the 256 rows that fixed the statistics, then the rest
    assert c.backend_ == "numpy" == c.network_.network_.backend.name


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield "." * node.level + (node.module or "")
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name


def test_the_library_never_imports_the_command_line():
    for path in (ROOT / "tinydl").rglob("*.py"):
        rel = path.relative_to(ROOT / "tinydl")
        if rel.parts[0] == "cli" or rel.name == "__main__.py":
            continue
        for name in _imports(path):
            assert "cli" not in name.split("."), f"{rel} imports {name}"
