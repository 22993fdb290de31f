"""The plan's shape chosen on held-out rows (tinydl.customize.tune_shape): the dense-code
order of capacity, the choice against an independent reference (the learners streamed and
scored by the rule transcribed here), the noise margin, bad input, and the plan that uses
it (``tinydl plan --data`` on the Daily and Sports subset, when present)."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tinydl.customize import SHAPE_FOLDS, SHAPE_MARGIN, _default_n_batch, plan, tune_shape
from tinydl.plan import SHAPES, _rank_key

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.environ.get("TINYDL_DATA", "/work/shared/data")
DSA = os.path.join(DATA, "dsa_subset20_f16.npz")


def _blobs(seed=0, n=240, m=24, classes=4, spread=0.6):
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((classes, m)) * 3
    y = rng.integers(0, classes, n)
    return (C[y] + spread * rng.standard_normal((n, m))).astype(np.float32), y


def _plans(m=24, classes=4, standardize="off"):
    """A plan, and the same plan crippled (two atoms, one non-zero, a 2-unit layer)."""
    good = plan(m, classes, memory_bytes=64 << 20, standardize=False)
    good = dataclasses.replace(good, l=16, k=8, hidden_layer_sizes=(32,), window=256,
                               epochs_per_update=5, standardize=standardize)
    bad = dataclasses.replace(good, l=2, k=1, hidden_layer_sizes=(2,))
    return good, bad


def _reference(X, y, plans, folds, seed):
    """Each plan's per-row correctness by the rule transcribed: a seeded shuffle, row i in
    fold i % folds, the plan's learner on the other folds (n_batch for their length), then
    predictions of the fold."""
    order = np.random.default_rng(seed).permutation(len(X))
    Xs, ys = X[order], y[order]
    fold = np.arange(len(Xs)) % folds
    out = {}
    for name, p in plans.items():
        ok = np.zeros(len(Xs))
        for f in range(folds):
            te = fold == f
            n_train = int((~te).sum())
            over = {"n_standardize": max(32, n_train // 16)} \
                if p.standardize == "running" else {}
            lr = p.learner(seed=seed, backend=p.backend, blocked=False,
                           n_batch=_default_n_batch(p.window, n_train), **over)
            lr.partial_fit(Xs[~te], ys[~te], classes=np.unique(y))
            lr.finish()
            ok[te] = lr.predict(Xs[te]) == ys[te]
        out[name] = ok
    return out


def test_dense_order_ranks_dense_codes_first_then_the_network():
    p = plan(520, 13, memory_bytes=256 << 10, standardize=False)
    fits = [c for c in p.candidates if not c.rejected]
    best = min(fits, key=_rank_key(False, 13, "dense"))
    assert 2 * best.k >= best.l
    dense = [c for c in fits if 2 * c.k >= c.l and c.l <= 100]
    # past the floors, no dense candidate has a larger network
    floors = [c for c in dense if c.window >= best.window and len(c.hidden_layer_sizes) >= 2]
    assert best.n_params == max(c.n_params for c in floors)
    # the atoms order picks more atoms than the dense one
    atoms = min(fits, key=_rank_key(False, 13))
    assert atoms.l > best.l
    assert SHAPES == ("atoms", "dense")


@pytest.mark.parametrize("dense_is_good,standardize", [(True, "off"), (False, "running")])
def test_the_better_learner_wins_and_matches_the_reference(dense_is_good, standardize):
    # 600 rows: each fold trains on 400, more than one of tune_shape's 256-row chunks
    X, y = _blobs(1, n=600)
    good, bad = _plans(standardize=standardize)
    plans = {"atoms": bad, "dense": good} if dense_is_good else {"atoms": good, "dense": bad}
    pick, acc, gain, se = tune_shape(X, y, plans, folds=SHAPE_FOLDS, seed=2)
    ref = _reference(X, y, plans, SHAPE_FOLDS, 2)
    for name in plans:
        assert acc[name] == pytest.approx(ref[name].mean(), abs=1e-12)
    d = ref["dense"] - ref["atoms"]
    assert gain == pytest.approx(d.mean(), abs=1e-12)
    assert se == pytest.approx(d.std(ddof=1) / np.sqrt(len(d)), rel=1e-9)
    assert pick == ("dense" if dense_is_good else "atoms")
    assert abs(gain) > SHAPE_MARGIN * se  # the crippled plan is clearly worse


class _Scripted:
    """A plan whose learner gets right exactly the rows listed (column 0 holds the row id)."""

    def __init__(self, right, window=256):
        self.right, self.window, self.standardize = set(right), window, "off"
        self.dtype, self.backend = "float64", "numpy"

    def learner(self, **kw):
        plan = self

        class L:
            def partial_fit(self, X, y, classes=None):
                self.classes = classes

            def finish(self):
                return self

            def predict(self, X):
                ids = X[:, 0].astype(int)
                return np.array([0 if i in plan.right else 1 for i in ids])
        return L()


@pytest.mark.parametrize("extra,dense", [(7, False), (12, True)])
def test_the_margin_is_three_standard_errors(extra, dense):
    # 300 rows, all of class 0: "atoms" right on the first 150; "dense" on those and `extra`
    # more. The paired differences are `extra` ones: gain = extra / 300 and
    # se = sqrt(extra (1 - extra / 300) / 299) / sqrt(300): 7 -> 2.98 SE, 12 -> 3.85 SE
    n = 300
    X = np.c_[np.arange(n), np.ones(n)].astype(np.float64)
    y = np.zeros(n, int)
    y[-1] = 1  # two classes
    atoms, dense_plan = _Scripted(range(150)), _Scripted(range(150 + extra))
    pick, acc, gain, se = tune_shape(X, y, {"atoms": atoms, "dense": dense_plan}, seed=0)
    d = np.zeros(n)
    d[150:150 + extra] = 1
    d[n - 1] -= (n - 1) in range(150 + extra)  # the class-1 row is never predicted right
    assert gain == pytest.approx(extra / n)
    assert se == pytest.approx(d.std(ddof=1) / np.sqrt(n))
    assert (gain > SHAPE_MARGIN * se) == dense and (gain > 2 * se)
    assert pick == ("dense" if dense else "atoms")


def test_no_departure_without_a_significant_gain():
    X, y = _blobs(3)
    good, _ = _plans()
    pick, acc, gain, se = tune_shape(X, y, {"atoms": good, "dense": good}, seed=0)
    assert pick == "atoms" and gain == 0.0 and acc["atoms"] == acc["dense"]


def test_bad_input_names_the_problem():
    X, y = _blobs(0, n=40)
    good, bad = _plans()
    with pytest.raises(ValueError, match=r"40 sampled rows are too few .* \(at least 48\)"):
        tune_shape(X, y, {"atoms": good, "dense": bad})
    X, y = _blobs(0)
    with pytest.raises(ValueError, match=r"240 rows but labels of shape \(239,\)"):
        tune_shape(X, y[:-1], {"atoms": good, "dense": bad})
    with pytest.raises(ValueError, match="1 class"):
        tune_shape(X, np.zeros(len(X), int), {"atoms": good, "dense": bad})
    X[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        tune_shape(X, y, {"atoms": good, "dense": bad})


def test_without_labels_the_plan_keeps_the_atoms_order():
    X, y = _blobs(0, n=300, m=24)
    p = plan(24, 4, memory_bytes=256 << 10, alpha_rows=X)
    assert p.shape == "atoms" and "shape:" not in p.reason


def test_plan_with_labels_scores_both_shapes():
    X, y = _blobs(0, n=300, m=24)
    p = plan(24, 4, memory_bytes=256 << 10, alpha_rows=X, row_labels=y)
    assert p.shape in SHAPES and "shape: " in p.reason
    assert p.shape == "dense" or "dense codes only when" in p.reason
    if p.shape == "dense":
        assert 2 * p.k >= p.l


def test_daily_and_sports_1mib_plan_takes_dense_codes(tmp_path):
    """On the Daily and Sports subset (the training part of reproduce's split only) the
    1 MiB plan's shape is dense: its learner beats the atoms-first plan's on held-out rows
    by more than SHAPE_MARGIN (3) standard errors (measured: 94.8% against 87.8%, +7.0
    points against 2.4; the issue's test split is not read)."""
    if not os.path.exists(DSA):
        pytest.skip(f"the Daily and Sports subset is absent ({DSA}): see "
                    "/work/shared/data/README.md")
    from tinydl.data import load_real, split_dataset
    ds = split_dataset(load_real(DSA), 0.2, 0)
    path = tmp_path / "dsa_train.npz"
    np.savez(path, X=ds.X_train.reshape(len(ds.X_train), -1).astype(np.float32),
             y=ds.y_train)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "tinydl", "plan", "--data", str(path),
                        "--memory", "1MiB", "--json", "-"], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    assert p["shape"] == "dense", p["reason"]
    assert 2 * p["k"] >= p["l"] and p["footprint_bytes"] <= 1 << 20
    assert "shape: dense" in p["reason"]
    # the dense plan's learner stays within the budget and the prediction (issue 18: 5%)
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(r.stdout)
    f = subprocess.run([sys.executable, "-m", "tinydl", "fit", str(path), "--plan",
                        str(plan_path), "--shuffle", "0", "--limit", "400", "--trace-memory",
                        "--quiet", "-o", str(tmp_path / "model"), "--json", "-"], env=env,
                       capture_output=True, text=True, timeout=600)
    assert f.returncode == 0, f.stderr
    peak = json.loads(f.stdout)["peak_learner_bytes"]
    assert peak <= 1 << 20, peak
    assert 0.95 * p["footprint_bytes"] <= peak <= 1.05 * p["footprint_bytes"], \
        (peak, p["footprint_bytes"])


def test_shape_asked_for_is_taken_without_scoring():
    X, y = _blobs(0, n=300, m=24)
    calls = []
    atoms = plan(24, 4, memory_bytes=256 << 10, alpha_rows=X, row_labels=y, shape="atoms",
                 progress=lambda d, t: calls.append(d))
    dense = plan(24, 4, memory_bytes=256 << 10, alpha_rows=X, row_labels=y, shape="dense",
                 progress=lambda d, t: calls.append(d))
    assert not calls  # no learner trained
    assert atoms.shape == "atoms" and "shape:" not in atoms.reason
    assert dense.shape == "dense" and 2 * dense.k >= dense.l
    assert "shape: dense (asked)" in dense.reason
    fits = [c for c in dense.candidates if not c.rejected]
    want = min((c for c in fits if 2 * c.k >= c.l), key=_rank_key(False, 4, "dense"))
    assert (dense.l, dense.k, dense.hidden_layer_sizes) == \
        (want.l, want.k, want.hidden_layer_sizes)
    # --explain ranks in the plan's own order: its winner heads the list
    lines = dense.explain().splitlines()
    head = lines[lines.index(next(x for x in lines if x.startswith("best "))) + 2]
    assert "dense-code order" in "\n".join(lines)
    assert head.split()[:2] == [f"l={dense.l}", f"k={dense.k}"]
    auto = plan(24, 4, memory_bytes=256 << 10, alpha_rows=X, row_labels=y,
                progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, 2 * SHAPE_FOLDS) and calls[-1] == (2 * SHAPE_FOLDS,) * 2
    assert auto.shape in SHAPES
    with pytest.raises(ValueError, match="shape must be 'auto', 'atoms' or 'dense', got 'wide'"):
        plan(24, 4, memory_bytes=256 << 10, shape="wide")


def test_cli_shape_flag(tmp_path):
    X, y = _blobs(0, n=300, m=64)  # m > 2 k: the two orders' winners differ
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=y)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = {}
    for shape in ("atoms", "dense"):
        r = subprocess.run([sys.executable, "-m", "tinydl", "plan", "--data", str(path),
                            "--memory", "256KiB", "--shape", shape, "--json", "-"], env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        out[shape] = json.loads(r.stdout)
        assert out[shape]["shape"] == shape
    assert 2 * out["dense"]["k"] >= out["dense"]["l"]
    # progress lines while the shapes are scored (auto), none when a shape is asked for
    for shape, scored in (("auto", True), ("atoms", False), ("dense", False)):
        r = subprocess.run([sys.executable, "-m", "tinydl", "plan", "--data", str(path),
                            "--memory", "256KiB", "--shape", shape, "-o",
                            str(tmp_path / f"{shape}.json")], env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert ("scoring the two plan shapes" in r.stderr) == scored, (shape, r.stderr)
    r = subprocess.run([sys.executable, "-m", "tinydl", "plan", "--data", str(path),
                        "--memory", "256KiB", "--shape", "dense", "--target-error", "0.5"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "does not apply with target_error" in r.stderr
    r = subprocess.run([sys.executable, "-m", "tinydl", "plan", "--data", str(path),
                        "--memory", "256KiB", "--shape", "wide"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "invalid choice: 'wide'" in r.stderr


@pytest.mark.parametrize("n", [3999, 5999, 9000, 150])
def test_the_sample_spreads_over_the_whole_file(tmp_path, n):
    """`tinydl plan --data`'s sample (rows i * n // want) reaches the end of a file sorted by
    class, its labels those of its rows (a fixed step cut at `want` rows left up to half of
    such a file out: n=3999 sampled classes 0-4 of 10)."""
    from tinydl.cli._common import tuning_sample
    from tinydl.data import open_stream
    y = np.repeat(np.arange(10), -(-n // 10))[:n]
    X = np.c_[np.arange(n), y, np.ones(n)].astype(np.float32)
    np.savez(tmp_path / "sorted.npz", X=X, y=y)
    rows, labels = tuning_sample(open_stream(str(tmp_path / "sorted.npz")), 1.0, 2000)
    want = min(n, 2000)
    np.testing.assert_array_equal(rows[:, 0], (np.arange(want) * n) // want)
    np.testing.assert_array_equal(labels, rows[:, 1])
    assert set(labels.tolist()) == set(range(10))
