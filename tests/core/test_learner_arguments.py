"""TinyDLClassifier's labels and parameters: what the first call cannot use is refused before
any state exists; a structural parameter changed by set_params after the stream started is
refused by partial_fit and save (a checkpoint of it would not load, and checkpoint writing
deletes the older ones); a checkpoint whose parts disagree with its parameters is refused."""
from __future__ import annotations

import os
import shutil
import warnings

import numpy as np
import pytest

from tinydl.errors import ModelFileError
from tinydl.learner import TinyDLClassifier

r = np.random.default_rng(0)
Y = r.integers(0, 3, 400)
X = (r.normal(size=(400, 12)) + Y[:, None]).astype(np.float32)


def mk(**kw):
    return TinyDLClassifier(**{**dict(l=16, k=4, hidden_layer_sizes=(8,), window=64,
                                      n_batch=32, epochs_per_update=1, rebuild_epochs=2,
                                      n_standardize=32), **kw})


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_a_refused_first_call_leaves_nothing_behind():
    a = mk()
    with pytest.raises(ValueError, match=r"outside classes \[0, 1\]: \[2\]"):
        a.partial_fit(X[:50], Y[:50], classes=[0, 1])
    assert not hasattr(a, "transform_") and not hasattr(a, "classes_")
    a.partial_fit(X[:50], Y[:50], classes=[0, 1, 2])  # the right classes now take
    assert a.classes_.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match=r"differs from the classes of the first call"):
        a.partial_fit(X[50:60], Y[50:60], classes=[0, 1])
    a.partial_fit(X[50:60], Y[50:60], classes=[2, 1, 0])  # the same set: fine


@pytest.mark.parametrize("classes,match", [([], "classes is empty"),
                                           ([0.0, np.nan], "non-finite label"),
                                           (np.array([1, "a"], dtype=object),
                                            r"classes mixes label types \(int, str\)")])
def test_classes_that_cannot_be_labels(classes, match):
    a = mk()
    with pytest.raises(ValueError, match=match):
        a.partial_fit(X[:50], np.zeros(50, int), classes=classes)
    assert not hasattr(a, "transform_")


def test_mixed_label_types_in_y():
    with pytest.raises(ValueError, match=r"y mixes label types \(int, str\)"):
        mk().fit(X[:300], np.array([1, "a", 2] * 100, dtype=object))


@pytest.mark.parametrize("name,value", [("k", 8), ("window", 16), ("l", 2),
                                        ("window_policy", "sliding"), ("dtype", "float64"),
                                        ("rebuild", "never"), ("hidden_layer_sizes", (5,)),
                                        ("standardize", False)])
def test_a_structural_change_after_the_start_is_refused_and_loses_nothing(tmp_path, name,
                                                                        value):
    d = str(tmp_path / "ck")
    a = mk(checkpoint_dir=d, checkpoint_every=100)
    a.fit(X[:300], Y[:300])
    ref = mk().fit(X[:300], Y[:300])
    before = sorted(os.listdir(d))
    a.set_params(**{name: value})
    with pytest.raises(ValueError, match=f"{name} changed from .* since the stream started"):
        a.partial_fit(X[300:], Y[300:])
    with pytest.raises(ValueError, match="set it back before saving"):
        a.save(str(tmp_path / "s"))
    assert sorted(os.listdir(d)) == before and not (tmp_path / "s").exists()
    a.set_params(**{name: ref.get_params()[name]})  # set back: continues as if untouched
    a.partial_fit(X[300:], Y[300:])
    ref.partial_fit(X[300:], Y[300:])
    np.testing.assert_array_equal(a.predict_proba(X[:50]), ref.predict_proba(X[:50]))
    TinyDLClassifier.load(d)
    a.set_params(**{name: value})
    a.fit(X[:300], Y[:300])  # fit restarts with the new value


def test_a_checkpoint_with_another_runs_parts_is_refused(tmp_path):
    a, b = mk().fit(X, Y), mk(hidden_layer_sizes=(5,)).fit(X, Y)
    c = mk(l=8).fit(X, Y)
    pa, pb, pc = (x.save(str(tmp_path / n)) for x, n in ((a, "a"), (b, "b"), (c, "c")))
    shutil.copy(os.path.join(pb, "network.npz"), os.path.join(pa, "network.npz"))
    with pytest.raises(ModelFileError, match=r"network.npz is 16-\(5,\)-3 .* say 16-\(8,\)-3"):
        TinyDLClassifier.load(str(tmp_path / "a"))
    shutil.copy(os.path.join(pc, "transform.npz"), os.path.join(pb, "transform.npz"))
    with pytest.raises(ModelFileError, match="transform.npz holds l=8 atoms of 12 features; "
                                             "the learner's parameters say l=16"):
        TinyDLClassifier.load(str(tmp_path / "b"))


def test_a_network_file_is_read_by_its_own_class(tmp_path):
    from tinydl.nn import CNNClassifier, MLPClassifier, NetworkClassifier
    m = MLPClassifier(hidden_layer_sizes=(8,), epochs=2).fit(X, Y)
    m.save(tmp_path / "mlp.npz")
    with pytest.raises(ModelFileError, match="holds a MLPClassifier, not a CNNClassifier"):
        CNNClassifier.load(tmp_path / "mlp.npz")
    assert type(NetworkClassifier.load(tmp_path / "mlp.npz")) is MLPClassifier
