"""The learner's policies for streams in recorded order: the class-balanced reservoir window,
rebuild on a new class, the measured recipe; each keeps the model bit-identical however the
stream is cut and across a checkpoint."""
import inspect

import numpy as np
import pytest

from tinydl.codes import SparseCodes
from tinydl.data import label_runs, load_dataset
from tinydl.learner import TinyDLClassifier
from tinydl.window import CodeWindow


def _codes(labels, k=2, n_atoms=10):
    idx = np.arange(len(labels))[:, None].repeat(k, 1).astype(np.int32) % n_atoms
    return SparseCodes(idx, idx.astype(np.float32), n_atoms)


def _sorted_digits(n=600):
    ds = load_dataset("digits")
    X, y = ds.X_train[:n], ds.y_train[:n]
    o = np.argsort(y, kind="stable")
    return X[o], y[o], ds.X_test, ds.y_test


def _learner(**kw):
    params = dict(l=24, k=6, alpha=0.5, hidden_layer_sizes=(16,), window=200, n_batch=50,
                  epochs_per_update=2, rebuild_epochs=4, seed=3, dtype="float64")
    params.update(kw)
    return TinyDLClassifier(**params)


def test_reservoir_keeps_every_class_of_a_sorted_stream():
    labels = np.repeat(np.arange(10), 100)            # in recorded order: class after class
    res = CodeWindow(50, 2, 1000, policy="reservoir", classes=np.arange(10), seed=1)
    res.push(_codes(labels, n_atoms=1000), labels)
    assert np.array_equal(np.bincount(res.view()[1], minlength=10), [5] * 10)
    assert np.array_equal(res.counts, [100] * 10) and len(res) == 50
    # a sliding window of the same size holds the last class only (the paper's policy)
    ring = CodeWindow(50, 2, 10, policy="sliding")
    ring.push(_codes(labels), labels)
    assert np.array_equal(np.unique(ring.view()[1]), [9])
    # each class's slots hold a uniform sample of its arrivals, not its first ones
    kept = res.view()[0].indices[:, 0]           # the arrival number of each kept sample
    assert len(np.unique(kept)) == 50 and np.all(kept // 100 == res.view()[1])
    assert np.mean(kept % 100 >= 5) > 0.5


def test_reservoir_is_the_same_however_the_stream_is_cut():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 500)
    codes = _codes(labels, n_atoms=1000)
    whole = CodeWindow(40, 2, 1000, policy="reservoir", classes=np.arange(4), seed=5)
    whole.push(codes, labels)
    cut = CodeWindow(40, 2, 1000, policy="reservoir", classes=np.arange(4), seed=5)
    for s in range(0, 500, 37):
        cut.push(SparseCodes(codes.indices[s:s + 37], codes.values[s:s + 37], 1000),
                 labels[s:s + 37])
    assert np.array_equal(whole.indices, cut.indices)
    assert np.array_equal(whole.labels, cut.labels)
    again = CodeWindow.from_state(whole.state(), 40, 2, 1000, "float32", policy="reservoir",
                                  classes=np.arange(4), seed=5)
    assert np.array_equal(again.view()[1], whole.view()[1])
    other = CodeWindow(40, 2, 1000, policy="reservoir", classes=np.arange(4), seed=6)
    other.push(codes, labels)
    assert not np.array_equal(other.indices, whole.indices)  # the seed draws


def test_rebuilds_exactly_at_the_marks_where_a_new_class_appears():
    X, y, _, _ = _sorted_digits()
    c = _learner()
    marks = []
    c.on_update = lambda lr: marks.append((lr.n_samples_seen_, lr.n_rebuilds_))
    c.partial_fit(X, y, classes=np.arange(10)).finish()
    rebuilt_at, before, seen_then = [], 0, set()
    for t, n in marks:
        if n > before:
            rebuilt_at.append(t)
        before = n
    expected = []
    for t, _ in marks:
        now = set(np.unique(y[:t]).tolist())
        if now - seen_then:
            expected.append(t)
            seen_then = now
    assert rebuilt_at == expected and expected[0] == 50
    assert c.n_rebuilds_ == len(expected) < len(marks)
    assert np.array_equal(c.rebuilt_classes_, np.arange(10))
    # a shuffled stream holds every class at the first mark: one rebuild
    o = np.random.default_rng(0).permutation(len(y))
    s = _learner().fit(X[o], y[o])
    assert s.n_rebuilds_ == 1 and s.n_updates_ == len(marks)


@pytest.mark.parametrize("policy", [dict(), dict(window_policy="sliding"),
                                    dict(rebuild="never"),
                                    dict(rebuild="never", window_policy="sliding",
                                         optimizer="sgd", learning_rate=0.01)])
def test_same_model_whatever_the_cuts_and_across_a_checkpoint(policy, tmp_path):
    X, y, Xte, _ = _sorted_digits()
    classes = np.arange(10)
    ref = _learner(**policy).partial_fit(X, y, classes=classes).finish()
    a = _learner(**policy)
    for s in range(0, len(X), 37):
        a.partial_fit(X[s:s + 37], y[s:s + 37], classes=classes)
    a.finish()
    assert a.n_updates_ == ref.n_updates_ and a.n_rebuilds_ == ref.n_rebuilds_
    assert np.array_equal(a.transform_.dictionary_, ref.transform_.dictionary_)
    assert np.array_equal(a.predict_proba(Xte), ref.predict_proba(Xte))
    # checkpoint in the middle of a block, between rebuilds; the work after it is redone
    b = _learner(**policy).partial_fit(X[:333], y[:333], classes=classes)
    b.save(tmp_path / "ck")
    b.partial_fit(X[333:420], y[333:420])
    r = TinyDLClassifier.load(tmp_path / "ck")
    assert dict(r.get_params(), backend=None) == _learner(**policy).get_params()
    r.partial_fit(X[333:], y[333:]).finish()
    assert r.n_rebuilds_ == ref.n_rebuilds_
    assert np.array_equal(r.transform_.dictionary_, ref.transform_.dictionary_)
    assert np.array_equal(r.predict_proba(Xte), ref.predict_proba(Xte))


def test_rebuild_learns_a_sorted_stream_that_the_papers_policy_does_not():
    ds = load_dataset("digits")
    o = np.argsort(ds.y_train, kind="stable")
    kw = dict(l=40, k=10, window=500, n_batch=100, epochs_per_update=10, dtype="float32")
    paper = _learner(rebuild="never", window_policy="sliding", **kw).fit(ds.X_train[o],
                                                                        ds.y_train[o])
    now = _learner(**kw).fit(ds.X_train[o], ds.y_train[o])
    assert paper.score(ds.X_test, ds.y_test) < 0.5 < 0.8 < now.score(ds.X_test, ds.y_test)
    # the raw rows the rebuild needs are part of the footprint
    assert now.footprint_bytes_ >= now.window_.raw.nbytes == 500 // 10 * 10 * 64 * 4


def test_get_params_lists_every_constructor_parameter_and_the_new_defaults():
    c = TinyDLClassifier()
    names = set(inspect.signature(TinyDLClassifier).parameters)
    assert set(c.get_params()) == names
    p = c.get_params()
    assert (p["optimizer"], p["learning_rate"], p["epochs_per_update"], p["batch_size"],
            p["loss"], p["dropout"], p["window_policy"], p["rebuild"],
            p["rebuild_epochs"]) == ("adam", 3e-3, 10, 64, "l2", 0.0, "reservoir",
                                     "new-class", 30)
    c.set_params(checkpoint_every=5, optimizer="sgd")
    assert c.checkpoint_every == 5 and c.optimizer == "sgd"
    with pytest.raises(ValueError, match="unknown parameter"):
        c.set_params(nope=1)
    X, y, _, _ = _sorted_digits(100)
    for bad, match in ((dict(window_policy="fifo"), "window_policy"),
                       (dict(rebuild="always"), "rebuild"), (dict(optimizer="rms"), "optimizer")):
        with pytest.raises(ValueError, match=match):
            _learner(**bad).partial_fit(X, y, classes=np.arange(10))


def test_label_runs_tell_blocks_from_a_shuffled_stream():
    y = np.repeat(np.arange(13), 150)
    r = label_runs(y, 256)
    assert r["blocked"] and r["mean_run"] == 150 and r["n_classes"] == 13
    assert r["classes_per_batch"] < 3
    s = label_runs(np.random.default_rng(0).permutation(y), 256)
    assert not s["blocked"] and s["mean_run"] < 1.3 and s["classes_per_batch"] == 13
