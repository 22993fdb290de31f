"""The one-sample execution path (tinydl.nn.infer, tinydl.onesample): the same results as the
batch path, buffers prepared again when the state changes, cheap validation that still raises,
and no array allocation per call."""
import copy
import tracemalloc

import numpy as np
import pytest

from tinydl.learner import TinyDLClassifier
from tinydl.nn import MLPClassifier
from tinydl.nn.infer import build_row_plan, row_is_finite

BACKENDS = ["numpy", "blas", "native"]


@pytest.fixture
def _backend(require_backend):
    """``_backend(name)``: the name, after skipping (or failing, where CI requires it) when
    that backend cannot run here."""
    def use(name):
        if name != "numpy":
            require_backend(name)
        return name
    return use


def _layer_by_layer(net, x):
    """The batch path (each layer's generic forward on its workspaces) on rows ``x``."""
    net.ensure(len(x), sparse_input=not isinstance(x, np.ndarray))
    for layer in net.layers:
        x = layer.forward(x, False)
    return x.copy()


def _reference(clf, x):
    """A literal transcription of the MLP's forward pass in float64 (the independent check)."""
    h = x.astype(np.float64)
    dense = [la for la in clf.network_.layers if la.kind == "dense"]
    for i, la in enumerate(dense):
        h = h @ la.p["W"].astype(np.float64) + la.p["b"]
        if i < len(dense) - 1:
            h = {"relu": lambda v: np.maximum(v, 0), "tanh": np.tanh,
                 "sigmoid": lambda v: 1 / (1 + np.exp(-v))}[clf.activation](h)
    return h


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation,dtype", [("relu", "float32"), ("tanh", "float64"),
                                              ("sigmoid", "float32")])
def test_mlp_one_sample_is_the_batch_path_bit_for_bit(backend, activation, dtype, _backend):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((120, 30)).astype(dtype)
    y = rng.integers(0, 4, 120)
    clf = MLPClassifier(hidden_layer_sizes=(24, 12), activation=activation, dropout=0.1,
                        epochs=3, dtype=dtype, backend=_backend(backend)).fit(X, y)
    net = clf.network_
    assert net.row_plan() is not None
    tol = 1e-5 if dtype == "float32" else 1e-12
    batch = clf.decision_function(X)
    for i in range(0, 120, 7):
        x1 = X[i:i + 1]
        z = clf.decision_function(x1)
        # the same row through the layers' generic path: the same bits
        assert np.array_equal(z, _layer_by_layer(net, x1))
        # a row of a whole batch: BLAS gemm against one row's gemv, within rounding
        np.testing.assert_allclose(z[0], batch[i], rtol=tol, atol=tol)
        np.testing.assert_allclose(z[0], _reference(clf, x1)[0], rtol=20 * tol, atol=20 * tol)
        assert clf.predict(x1)[0] == clf.classes_[np.argmax(z)]
        np.testing.assert_allclose(clf.predict_proba(x1), clf.predict_proba(X)[i:i + 1],
                                   rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("product", ["gather", "dense"])
def test_sparse_codes_one_sample_is_the_batch_path_bit_for_bit(backend, product, _backend):
    from tinydl.codes import SparseCodes
    rng = np.random.default_rng(2)
    idx = np.stack([rng.choice(40, 6, replace=False) for _ in range(50)]).astype(np.int32)
    idx[::5, 4:] = -1
    val = np.where(idx >= 0, rng.standard_normal(idx.shape), 0).astype(np.float32)
    y = rng.integers(0, 3, 50)
    codes = SparseCodes(idx, val, 40)
    clf = MLPClassifier(hidden_layer_sizes=(16,), epochs=2, sparse_product=product,
                        backend=_backend(backend)).fit(codes, y)
    net = clf.network_
    plan = net.row_plan(True)  # "dense": the codes scattered into a row of its own
    assert plan is not None and (plan._row is None) == (product == "gather")
    for i in range(0, 50, 3):
        one = SparseCodes(idx[i:i + 1].copy(), val[i:i + 1].copy(), 40)
        fast = net.forward(one).copy()
        assert np.array_equal(fast, _layer_by_layer(net, one))
        np.testing.assert_allclose(fast[0], clf.decision_function(codes)[i], rtol=1e-5,
                                   atol=1e-6)


def test_a_loaded_network_computes_codes_as_the_saved_one(tmp_path):
    """The first layer's product for compact codes ("auto" picks one by timing) is saved:
    a loaded model's outputs are the saved model's, bit for bit, batch and one sample."""
    from tinydl.codes import SparseCodes
    rng = np.random.default_rng(6)
    idx = np.stack([rng.choice(30, 5, replace=False) for _ in range(60)]).astype(np.int32)
    codes = SparseCodes(idx, rng.standard_normal(idx.shape).astype(np.float32), 30)
    for mode in ("gather", "dense"):
        clf = MLPClassifier(hidden_layer_sizes=(8,), epochs=2, sparse_product=mode)
        clf.fit(codes, rng.integers(0, 3, 60))
        clf.save(tmp_path / f"{mode}.npz")
        back = MLPClassifier.load(tmp_path / f"{mode}.npz")
        assert back.network_.layers[0].sparse_product == mode
        assert np.array_equal(back.decision_function(codes), clf.decision_function(codes))
        one = SparseCodes(idx[:1].copy(), codes.values[:1].copy(), 30)
        assert np.array_equal(back.decision_function(one), clf.decision_function(one))


def test_cnn_keeps_the_batch_path():
    from tinydl.nn import CNNClassifier
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 16)).astype(np.float32)
    y = rng.integers(0, 2, 40)
    clf = CNNClassifier(input_shape=(1, 16), conv_layers=((2, 3, 1),), hidden_layer_sizes=(4,),
                        epochs=1).fit(X, y)
    assert build_row_plan(clf.network_, False) is None
    assert np.array_equal(clf.predict(X[:1]), clf.predict(X)[:1])


def test_row_is_finite_catches_nan_and_inf():
    x = np.ones((1, 50), np.float32)
    assert row_is_finite(x)
    with pytest.warns(RuntimeWarning, match="overflow"):  # x . x overflows: the exact test
        assert row_is_finite(x * np.float32(3e38))
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[0, 17] = bad
        with np.errstate(all="raise"):  # and no floating-point warning for them
            assert not row_is_finite(y)


def test_mlp_bad_one_sample_raises_and_leaves_the_model_usable():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((80, 10)).astype(np.float32)
    clf = MLPClassifier(hidden_layer_sizes=(8,), epochs=2).fit(X, rng.integers(0, 3, 80))
    before = clf.decision_function(X[:1])
    bad = X[:1].copy()
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        clf.predict(bad)
    with pytest.raises(ValueError, match="11 features"):
        clf.predict(np.ones((1, 11), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        clf.predict(X[0])
    assert np.array_equal(clf.decision_function(X[:1]), before)
    # other dtypes and layouts are converted by the batch path: the same answer
    np.testing.assert_allclose(clf.decision_function(X[:1].astype(np.float64)), before)
    np.testing.assert_allclose(clf.decision_function(np.asfortranarray(X[:1])), before)


def test_one_sample_forward_allocates_no_array_data():
    """Through the row plan a call allocates nothing that grows with the network (a buffer
    of the 2048-unit layer alone would be 8 KiB; what is seen is small Python objects)."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((64, 300)).astype(np.float32)
    clf = MLPClassifier(hidden_layer_sizes=(2048, 512), epochs=1).fit(X, rng.integers(0, 5, 64))
    x1 = X[:1].copy()
    clf.predict(x1)
    tracemalloc.start()
    for _ in range(20):
        clf.network_.forward(x1)
        clf.predict(x1)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2048, peak


# -- the learner -----------------------------------------------------------------------------

def _stream(n=700, m=24, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((4, m)) * 3
    y = rng.integers(0, 4, n)
    return (centers[y] + rng.standard_normal((n, m))).astype(np.float32), y


def _learner(backend="numpy", **kw):
    args = dict(l=16, k=5, hidden_layer_sizes=(12,), window=256, n_batch=128,
                epochs_per_update=2, backend=backend)
    args.update(kw)
    return TinyDLClassifier(**args)


def _batch_outputs(clf, X):
    """The batch path on the rows of X one at a time (a float64 row is converted, so it
    cannot take the prepared path)."""
    return np.concatenate([clf._net_outputs(X[i:i + 1].astype(np.float64))
                           for i in range(len(X))])


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("rebuild", ["never", "new-class"])
def test_learner_one_sample_equals_the_batch_path(backend, rebuild, _backend):
    X, y = _stream()
    clf = _learner(_backend(backend), rebuild=rebuild).fit(X[:500], y[:500])
    row = clf._row
    assert row is not None and row.valid_for(clf)
    Xt = X[500:560]
    fast = np.concatenate([clf._net_outputs(Xt[i:i + 1]) for i in range(len(Xt))])
    # the codes: bit-identical to the transform's batch codes of the standardized rows
    std = clf.standardizer_.transform(Xt)
    ref = clf.transform_.transform(std, dense=False)
    for i in range(len(Xt)):
        clf.predict(Xt[i:i + 1])
        assert np.array_equal(row.indices[0], ref.indices[i])
        assert np.array_equal(row.values[0], ref.values[i] * clf._code_scale)
    # the outputs: the same bits as the batch path on the same row, and within rounding of a
    # whole batch's (the dense layers' gemm against gemv)
    assert np.array_equal(fast, _batch_outputs(clf, Xt))
    np.testing.assert_allclose(fast, clf._net_outputs(Xt), rtol=1e-5, atol=1e-5)
    one = np.concatenate([clf.predict(Xt[i:i + 1]) for i in range(len(Xt))])
    assert np.array_equal(one, clf.classes_[np.argmax(fast, axis=1)])
    np.testing.assert_allclose(clf.predict_proba(Xt[:1]), clf.predict_proba(Xt)[:1],
                               rtol=1e-5, atol=1e-6)


def test_learner_buffers_follow_updates_rebuilds_and_loads(tmp_path):
    X, y = _stream(900)
    clf = _learner(rebuild="new-class")
    clf.partial_fit(X[:300], y[:300], classes=np.unique(y))
    first = clf._row
    assert first is not None and clf.n_updates_ == 2
    x1 = X[850:851]
    clf.predict(x1)
    clf.partial_fit(X[300:700], y[300:700])  # updates (and maybe a rebuild): prepared again
    assert clf._row is not first and clf._row.valid_for(clf)
    assert np.array_equal(clf._net_outputs(x1), _batch_outputs(clf, x1))
    # a state changed behind the learner's back (a fresh network object) is noticed
    old_net = clf.network_
    clf.network_ = copy.deepcopy(old_net)
    assert not clf._row.valid_for(clf)
    assert np.array_equal(clf._net_outputs(x1), _batch_outputs(clf, x1))
    assert clf._row.valid_for(clf)
    # a load prepares the buffers of the loaded state
    clf.save(tmp_path)
    back = TinyDLClassifier.load(tmp_path)
    assert back._row is not None and back._row.valid_for(back)
    assert np.array_equal(back._net_outputs(x1), clf._net_outputs(x1))
    assert np.array_equal(back.predict(X[700:]), clf.predict(X[700:]))
    # copies (deepcopy, pickle) drop the bound buffers and prepare their own
    dup = copy.deepcopy(clf)
    assert "_row" not in dup.__dict__
    assert np.array_equal(dup._net_outputs(x1), clf._net_outputs(x1))
    # set_params may change the code scale (k): the buffers go
    clf.set_params(k=4)
    assert "_row" not in clf.__dict__


def test_learner_bad_one_sample_raises_and_leaves_the_model_usable():
    X, y = _stream()
    clf = _learner().fit(X[:500], y[:500])
    x1 = X[600:601]
    before = clf._net_outputs(x1).copy()
    bad = x1.copy()
    bad[0, 5] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        clf.predict(bad)
    with pytest.raises(ValueError, match="25 features"):
        clf.predict(np.ones((1, 25), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        clf.predict(x1[0])
    assert np.array_equal(clf._net_outputs(x1), before)
    np.testing.assert_allclose(clf._net_outputs(x1.astype(np.float64)), before)


@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_learner_one_sample_predict_allocates_no_array_data(backend, _backend):
    """The learner's part of a one-sample predict (validation, standardization, the codes'
    scaling, the network, the label) allocates no array data: the transform's own call
    (tinydl.transform's, tested there) is replaced by a copy of its codes here."""
    X, y = _stream(700, m=2000)
    clf = _learner(_backend(backend), l=32, k=8, hidden_layer_sizes=(1024,))
    clf.fit(X[:500], y[:500])
    x1 = X[600:601].copy()
    expected = clf.predict(x1)
    row = clf._row
    idx, val = row.indices.copy(), row.values.copy()
    clf.transform_.transform_into(row.x, idx, val)  # x1's codes, before the code scale

    def codes(x, indices, values):  # what transform_into wrote for x1
        indices[...] = idx
        values[...] = val
    clf.transform_.transform_into = codes
    clf.predict(x1)
    tracemalloc.start()
    for _ in range(20):
        assert clf.predict(x1) == expected
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4096, peak  # the standardized row alone is 8000 bytes, a layer 4096


# -- the native backend's fused one-sample predict (hal/backends/native/predict.c) ---------
# One kernel call: standardization, codes, code scale, the network, the argmax.  The codes
# and the first layer are the same arithmetic as the NumPy one-sample path (bit-identical);
# the dense layers after it sum in input order where NumPy's gemv may not, and tanh is libm's:
# outputs within FUSED_RTOL of the largest output's size, and the same predicted classes.
FUSED_RTOL = 1e-5


def _fused_matches_numpy_path(clf, rows):
    row = clf._row
    assert row is not None and row.fused is not None and row.valid_for(clf)
    for i in range(len(rows)):
        x = rows[i:i + 1]
        z = row.outputs(x).copy()  # the NumPy one-sample path (buffers of its own)
        idx, val = row.indices.copy(), row.values.copy()
        label = clf.predict(x)  # the fused kernel: rewrites the codes, fills fused.out
        assert np.array_equal(row.indices, idx) and np.array_equal(row.values, val)
        np.testing.assert_allclose(row.fused.out, z, rtol=0,
                                   atol=FUSED_RTOL * float(np.abs(z).max()))
        assert label[0] == clf.classes_[np.argmax(z)]


def _real_slice(shared_data, name):
    """(X, y, X_test) float32: a small slice of a shared data set (skips when absent)."""
    path = shared_data / name
    if not path.exists():
        pytest.skip(f"{name} absent: {path} does not exist")
    with np.load(path, allow_pickle=False) as z:
        if name.startswith("uji"):
            return (z["X_train"][:800].astype(np.float32), z["y_train"][:800],
                    z["X_test"][:80].astype(np.float32))
        # Daily and Sports (m = 5625): a seeded shuffle (the file is ordered by activity)
        order = np.random.default_rng(0).permutation(len(z["y"]))[:480]
        X = z["X"][order].reshape(len(order), -1).astype(np.float32)
        return X[:400], z["y"][order][:400], X[400:]


@pytest.mark.filterwarnings("ignore:OMP stopped early")  # rows of many "not detected" WAPs
@pytest.mark.parametrize("name", ["ujiindoorloc.npz", "dsa_subset20_f16.npz"])
def test_fused_predict_matches_the_numpy_path_on_real_data(name, shared_data, _backend):
    """Real data slices (UJIIndoorLoc m = 520, Daily and Sports m = 5625): codes
    bit-identical, outputs within FUSED_RTOL, the same classes as the NumPy one-sample
    path."""
    X, y, Xt = _real_slice(shared_data, name)
    clf = _learner(_backend("native"), l=48, k=8, hidden_layer_sizes=(32, 16))
    clf.fit(X, y)
    _fused_matches_numpy_path(clf, Xt)


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu"])
def test_fused_kernel_layers_against_a_float64_transcription(act, _backend):
    """The fused kernel's network part on each activation it runs (the learner's nets are
    ReLU: the specs are swapped here), against a float64 transcription of the layers on the
    codes it wrote."""
    X, y = _stream()
    clf = _learner(_backend("native"), hidden_layer_sizes=(12, 9)).fit(X[:500], y[:500])
    row = clf._row
    specs = [s if s[0] != "relu" else (act,) for s in row.fused_specs]
    fused = clf.network_.network_.backend.prepare_predict(
        row._into[6], row.mean, row.scale, row.code_scale, specs)
    f = {"tanh": np.tanh, "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
         "relu": lambda v: np.maximum(v, 0)}[act]
    idx, val = row.indices.copy(), row.values.copy()
    for i in range(500, 540):
        j = fused.predict(X[i:i + 1], idx, val)
        h = np.zeros(specs[0][1].shape[0])
        h[idx[0][idx[0] >= 0]] = val[0][idx[0] >= 0]
        for s in specs:
            h = h @ s[1].astype(np.float64) + s[2] if s[0] == "dense" else f(h)
        np.testing.assert_allclose(fused.out[0], h, rtol=0, atol=1e-5 * np.abs(h).max())
        assert j == np.argmax(fused.out[0])
    bad = X[600:601].copy()
    bad[0, 3] = np.nan
    assert fused.predict(bad, idx, val) == -1
    with pytest.raises(ValueError, match="NaN or Inf"):
        clf.predict(bad)


def test_fused_predict_follows_the_transform_state(_backend):
    """The fused plan is made again when the transform's execution state changes (updates,
    a re-prepared transform_into) and after a load."""
    X, y = _stream(900)
    clf = _learner(_backend("native"))
    clf.partial_fit(X[:300], y[:300], classes=np.unique(y))
    first = clf._row.fused
    assert first is not None
    clf.partial_fit(X[300:700], y[300:700])
    assert clf._row.fused is not first
    clf.transform_._into = None  # the transform re-prepares: the fused plan goes too
    stale = clf._row
    assert not stale.valid_for(clf)
    clf.predict(X[700:701])  # prepared again on use
    assert clf._row is not stale and clf._row.fused is not None
    _fused_matches_numpy_path(clf, X[700:720])


@pytest.mark.parametrize("backend", BACKENDS)
def test_deepcopy_of_a_trained_learner_on_any_backend(backend, _backend):
    """A trained learner deep-copies on every backend (the native sparse-layer plan holds
    cffi pointers: copies drop it and prepare their own), and the copy then learns and
    predicts exactly as the original does."""
    X, y = _stream()
    clf = _learner(_backend(backend)).fit(X[:500], y[:500])
    clf.predict(X[500:501])  # the one-sample buffers exist too
    dup = copy.deepcopy(clf)
    assert np.array_equal(dup.predict(X[500:]), clf.predict(X[500:]))
    clf.partial_fit(X[500:650], y[500:650])
    dup.partial_fit(X[500:650], y[500:650])
    assert np.array_equal(dup.network_.predict_proba(dup.transform(X[650:])),
                          clf.network_.predict_proba(clf.transform(X[650:])))
    assert dup.network_.network_.layers[0].p["W"] is not clf.network_.network_.layers[0].p["W"]


def test_learner_with_the_dense_product_predicts_one_sample_on_the_prepared_path():
    """The small-memory plans' first-layer product ("dense"): the learner prepares the
    one-sample path too, and its outputs are the batch path's on that row, bit for bit."""
    from tinydl.learner import TinyDLClassifier
    rng = np.random.default_rng(4)
    X = rng.standard_normal((400, 24)).astype(np.float32)
    y = rng.integers(0, 4, 400)
    clf = TinyDLClassifier(l=16, k=4, hidden_layer_sizes=(12, 8), window=128, n_batch=64,
                           sparse_product="dense", seed=0).fit(X, y)
    row = clf._prepare_row()
    assert row is not None and row.plan._row is not None
    batch = clf.decision_function(X[:40]) if hasattr(clf, "decision_function") else None
    for i in range(40):
        one = X[i:i + 1].copy()
        z = clf._row_outputs(one).copy()
        codes = clf._codes(one)
        from tinydl.codes import SparseCodes
        codes = SparseCodes(np.ascontiguousarray(codes.indices, np.int32),
                            codes.values * clf._code_scale, codes.n_atoms)
        assert np.array_equal(z, _layer_by_layer(clf.network_.network_, codes))
        assert clf.predict(one)[0] == clf.classes_[np.argmax(z)]
        if batch is not None:
            np.testing.assert_allclose(z[0], batch[i], rtol=1e-5, atol=1e-6)


def test_dense_product_learner_makes_its_one_sample_path_on_first_use_while_streaming():
    """While a learner streams, a "dense"-product network's one-sample path (not in the
    plan's footprint) is made only when one sample is predicted; a "gather" one is made
    after every update, as before; finish makes both."""
    from tinydl.learner import TinyDLClassifier
    rng = np.random.default_rng(5)
    X = rng.standard_normal((300, 20)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    for product in ("dense", "gather"):
        clf = TinyDLClassifier(l=12, k=3, hidden_layer_sizes=(8,), window=64, n_batch=32,
                               sparse_product=product, seed=0)
        clf.partial_fit(X[:200], y[:200], classes=np.unique(y))
        assert clf.n_updates_ > 0
        assert (clf.__dict__.get("_row") is None) == (product == "dense")
        label = clf.predict(X[200:201])
        assert clf.__dict__.get("_row") is not None  # made by that call
        assert label[0] == clf.predict(X[200:202])[0]
        clf.partial_fit(X[200:], y[200:])
        clf.finish()
        assert clf.__dict__.get("_row") is not None
