"""Issue 16: prepared dictionaries and the one-sample paths give exactly today's codes."""
import pickle

import numpy as np
import pytest

import tinydl
from tinydl.omp import PreparedDictionary, omp, prepare
from tinydl.transform import StreamingDictionary

BACKENDS = ["numpy", "blas", "native"]


def _dict(rng, l, m, dtype):
    D = rng.standard_normal((l, m)).astype(dtype)
    return D / np.linalg.norm(D, axis=1, keepdims=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_prepared_equals_unprepared(backend, dtype, require_backend):
    if backend != "numpy":
        require_backend(backend)
    rng = np.random.default_rng(3)
    D = _dict(rng, 40, 70, dtype)
    X = rng.standard_normal((37, 70)).astype(dtype)
    pd = prepare(D, 6, backend=backend)
    assert isinstance(pd, PreparedDictionary)
    ref = omp(X, D, 6, backend=backend)
    for _ in range(2):  # the second call reuses the workspace (and its D.T copy)
        assert np.array_equal(omp(X, pd), ref)
        assert np.array_equal(pd.encode(X), ref)
    for i in (0, 5, 36):  # one sample at a time: the codes it has in the batch
        assert np.array_equal(pd.encode(X[i:i + 1])[0], ref[i])
        assert np.array_equal(omp(X[i:i + 1], D, 6, backend=backend)[0], ref[i])
    c, r = omp(X, pd, return_residual=True)
    c2, r2 = omp(X, D, 6, backend=backend, return_residual=True)
    assert np.array_equal(r, r2)
    sp = omp(X, pd, return_dense=False)
    assert np.array_equal(sp.to_dense(), ref)
    # with a tolerance
    pdt = prepare(D, 6, tol=0.6, backend=backend)
    assert np.array_equal(pdt.encode(X), omp(X, D, 6, tol=0.6, backend=backend))


def test_prepared_matches_numpy_reference(require_backend):
    require_backend("native")
    rng = np.random.default_rng(4)
    D = _dict(rng, 30, 50, "float64")
    X = rng.standard_normal((20, 50))
    got = prepare(D, 5, backend="native").encode(X)
    ref = omp(X, D, 5, backend="numpy")
    assert np.allclose(got, ref, rtol=0, atol=1e-10 * np.abs(ref).max())


def test_prepared_copies_and_rejects_overrides():
    rng = np.random.default_rng(5)
    D = _dict(rng, 10, 20, "float64")
    X = rng.standard_normal((4, 20))
    pd = prepare(D, 3, backend="numpy")
    ref = pd.encode(X)
    D[:] = 0  # the caller's array changes: the prepared copy does not
    assert np.array_equal(pd.encode(X), ref)
    with pytest.raises(TypeError):
        omp(X, pd, 3)
    with pytest.raises(TypeError):
        omp(X, D)
    with pytest.raises(ValueError):
        pd.encode(rng.standard_normal((2, 19)))
    assert tinydl.omp is omp or callable(tinydl.omp)


def test_prepared_pickle_drops_scratch():
    rng = np.random.default_rng(6)
    D = _dict(rng, 10, 20, "float32")
    X = rng.standard_normal((4, 20)).astype(np.float32)
    pd = prepare(D, 3, backend="numpy")
    ref = pd.encode(X)
    assert pd._ws is not None
    cp = pickle.loads(pickle.dumps(pd))
    assert cp._ws is None
    assert np.array_equal(cp.encode(X), ref)
    assert cp._ws is not pd._ws


@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_transform_one_sample_and_invalidation(backend, tmp_path, require_backend):
    if backend != "numpy":
        require_backend(backend)
    rng = np.random.default_rng(7)
    X = rng.standard_normal((90, 30)).astype(np.float32)
    sd = StreamingDictionary(l=40, k=5, alpha=0.3, dtype="float32", backend=backend)
    sd.partial_fit(X[:20])
    n0 = sd.n_atoms_
    T = X[60:70]
    first = sd.transform(T)
    for i in range(len(T)):
        assert np.array_equal(sd.transform(T[i:i + 1])[0], first[i])
    # atoms join: the prepared state follows the new dictionary
    sd.partial_fit(X[20:40])
    assert sd.n_atoms_ > n0
    fresh = StreamingDictionary(l=40, k=5, alpha=0.3, dtype="float32", backend=backend)
    fresh.partial_fit(X[:20]).partial_fit(X[20:40])
    again = sd.transform(T)
    assert np.array_equal(again, fresh.transform(T))
    assert not np.array_equal(again, first)
    # after save/load
    sd.save(tmp_path / "t.npz")
    ld = StreamingDictionary.load(tmp_path / "t.npz")
    # prepared on load (and at the end of a fit), not on the first call
    assert ld._bws._plan is not None and ld._bws._plan_key[0] == ld.n_atoms_
    assert sd._bws._plan_key[0] == sd.n_atoms_
    assert np.array_equal(ld.transform(T), again)
    assert np.array_equal(ld.transform(T[:1])[0], again[0])
    # a copy whose arrays are read-only (joblib's memory maps)
    cp = pickle.loads(pickle.dumps(sd))
    for name in ("_D", "_G"):
        getattr(cp, name).flags.writeable = False
    assert np.array_equal(cp.transform(T), again)


def test_learner_one_sample_predict_is_the_checked_path(tmp_path):
    from tinydl.learner import TinyDLClassifier
    rng = np.random.default_rng(8)
    X = rng.standard_normal((300, 24)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    clf = TinyDLClassifier(l=16, k=4, hidden_layer_sizes=(8,), n_batch=128,
                           epochs_per_update=1, backend="numpy").fit(X, y)

    def reference(Z):  # the network's own checked input path, as before issue 16
        codes = clf._codes(Z).scaled(clf._code_scale)
        return (clf.classes_[clf.network_.predict(codes).astype(np.intp)],
                clf.network_.predict_proba(codes))
    lab, prob = reference(X[:40])
    assert np.array_equal(clf.predict(X[:40]), lab)
    assert np.array_equal(clf.predict_proba(X[:40]), prob)
    for i in (0, 17):
        # one row: the same bits as the checked path on that one row; against the row of a
        # 40-row batch to rounding only (BLAS gemm vs one row's gemv, as documented)
        one = clf.predict_proba(X[i:i + 1])
        assert np.array_equal(one, reference(X[i:i + 1])[1])
        np.testing.assert_allclose(one[0], prob[i], rtol=1e-5, atol=1e-6)
    clf.save(tmp_path / "m")
    ld = TinyDLClassifier.load(tmp_path / "m", backend="numpy")
    # the loaded network's outputs may differ from the saved one's by an ulp (so they did
    # before issue 16): compare the loaded learner with its own checked path
    assert np.array_equal(ld.transform(X[:40]), clf.transform(X[:40]))
    codes = ld._codes(X[:40]).scaled(ld._code_scale)
    assert np.array_equal(ld.predict_proba(X[:40]), ld.network_.predict_proba(codes))
    cp = pickle.loads(pickle.dumps(clf))
    cp.transform_._D.flags.writeable = False
    assert np.array_equal(cp.predict(X[:40]), lab)
    with pytest.raises(ValueError):
        clf.predict(np.full((1, 24), np.nan, np.float32))
