"""The execution-phase rule (hal.execution): a ``compiled_execution`` backend (blas) codes a
fitted transform's rows and runs a learner's one-sample predict on the native per-row
kernels where they build; its own plan where they do not (or with TINYDL_EXECUTION=backend);
training untouched either way."""
from __future__ import annotations

import numpy as np
import pytest

import hal
import hal.execution as execution
from hal.backends.numpy.encode import EncodePlan as NumpyEncodePlan
from tinydl.learner import TinyDLClassifier
from tinydl.transform import StreamingDictionary

# float32 OMP against the NumPy specification (the native backend's stated tolerance)
COEF_TOL = 1e-4


def _stream(seed=0, n=400, m=36, rank=10, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, m))
    X += 0.3 * rng.standard_normal((n, m))
    y = (X[:, 0] > 0).astype(int) + 2 * (X[:, 1] > 0)
    return (X + 1.0).astype(dtype), y


@pytest.fixture
def blas_and_native(require_backend):
    require_backend("blas")
    require_backend("native")


@pytest.fixture
def no_native(monkeypatch):
    """As on a machine without a C compiler: the rule finds no native kernels."""
    monkeypatch.setattr(execution, "_NATIVE", [None])


def _native_reference(sd, X, k):
    """The codes of the native backend's own encode plan over the transform's final
    dictionary (its own transposed copy, made from ``dictionary_``), on standardized X."""
    be = hal.get_backend("native")
    n = sd.n_atoms_
    D = np.ascontiguousarray(sd.dictionary_)
    G = np.ascontiguousarray(sd._G[:n, :n])
    plan = be.prepare_encode(D, G, k)
    Xs = X if sd.mean_ is None else (X - sd.mean_) / sd.scale_
    Xs = np.ascontiguousarray(Xs, sd.dtype_)
    idx = np.empty((len(X), min(k, n)), np.int32)
    val = np.empty((len(X), min(k, n)), sd.dtype_)
    plan.encode(Xs, idx, val)
    return idx, val


def test_rule_per_backend(blas_and_native, monkeypatch):
    assert execution.execution_backend(hal.get_backend("blas")).name == "native"
    for name in ("numpy", "native"):
        be = hal.get_backend(name)
        assert execution.execution_backend(be) is be
    monkeypatch.setenv("TINYDL_EXECUTION", "backend")
    be = hal.get_backend("blas")
    assert execution.execution_backend(be) is be


@pytest.mark.parametrize("standardize,dtype", [(False, np.float32), (True, np.float32),
                                               (True, np.float64)])
def test_blas_transform_runs_the_native_kernels_as_the_dictionary_grows(blas_and_native,
                                                                        standardize, dtype):
    X, _ = _stream(dtype=dtype)
    T = X[300:]
    sd = StreamingDictionary(l=40, k=6, alpha=0.1, standardize=standardize,
                             n_standardize=50, backend="blas")
    atoms = []
    for start, stop in ((0, 60), (60, 150), (150, 300)):  # atoms join between the calls
        sd.partial_fit(X[start:stop])
        atoms.append(sd.n_atoms_)
        got = sd.transform(T, dense=False)
        idx, val = _native_reference(sd, T, 6)
        assert np.array_equal(got.indices, idx) and np.array_equal(got.values, val)
        # one row at a time: the same bits as in the batch
        i1, v1 = np.empty((1, idx.shape[1]), np.int32), np.empty((1, idx.shape[1]), dtype)
        for r in (0, 7, 99):
            sd.transform_into(np.ascontiguousarray(T[r:r + 1]), i1, v1)
            assert np.array_equal(i1[0], idx[r]) and np.array_equal(v1[0], val[r])
    assert atoms[0] < atoms[1] < atoms[2]  # the execution plan followed a growing dictionary
    assert type(sd._bws._xplan).__module__ == "hal.backends.native.bound"


def test_blas_without_native_falls_back_to_its_own_plan(blas_and_native, no_native):
    X, _ = _stream(1)
    sd = StreamingDictionary(l=40, k=6, alpha=0.35, backend="blas").fit(X[:300])
    got = sd.transform(X[300:], dense=False)
    assert isinstance(sd._exec_plan(sd._check_params()), NumpyEncodePlan)
    # the native kernels' codes agree to their stated tolerance: same supports, coefficients
    # within COEF_TOL of the largest (the data are well separated: no near-tie argmax)
    idx, val = _native_reference(sd, X[300:], 6)
    assert np.array_equal(np.sort(got.indices, axis=1), np.sort(idx, axis=1))
    dense_got = got.to_dense()
    from hal.codes import SparseCodes
    dense_ref = SparseCodes(idx, val, sd.l).to_dense()
    assert np.abs(dense_got - dense_ref).max() <= COEF_TOL * np.abs(dense_ref).max()


def _feed(sd, X, one_row):
    """The stream's codes of ``X`` fed as one batch, or a row at a time (then also the
    atoms after each row)."""
    if not one_row:
        c = sd.partial_fit_transform(X, dense=False)
        return c.indices, c.values, None
    parts, atoms = [], []
    for i in range(len(X)):
        parts.append(sd.partial_fit_transform(X[i:i + 1], dense=False))
        atoms.append(sd.n_atoms_)
    return (np.concatenate([p.indices for p in parts]),
            np.concatenate([p.values for p in parts]), np.array(atoms))


@pytest.mark.parametrize("standardize,dtype", [(False, np.float32), (True, np.float32),
                                               (True, np.float64)])
def test_blas_stream_one_row_gives_the_batch_bits(blas_and_native, standardize, dtype):
    """The stream's coding on the execution kernels (fill phase, joins, steady state,
    lean one-row partial_fit): a row at a time gives the batch's dictionary and codes bit
    for bit."""
    X, _ = _stream(5, n=240, dtype=dtype)
    s = 10  # the first rows fix the statistics (standardize): fed as a batch by all
    kw = dict(l=12, k=6, alpha=0.3, standardize=standardize, n_standardize=s,
              backend="blas")
    batch = StreamingDictionary(**kw)
    _feed(batch, X[:s], False)
    ci, cv, _ = _feed(batch, X[s:], False)
    one = StreamingDictionary(**kw)
    _feed(one, X[:s], False)
    oi, ov, atoms = _feed(one, X[s:], True)
    # rows while atoms joined, then the steady state (the runner's one-call path)
    assert atoms[0] < 12 and atoms[-1] == 12 and (atoms == 12).sum() > 100
    assert np.array_equal(oi, ci) and np.array_equal(ov, cv)
    lean = StreamingDictionary(**kw)
    lean.partial_fit(X[:s])
    for i in range(s, len(X)):
        lean.partial_fit(X[i:i + 1])  # the runner's codes go to its scratch
    for sd in (one, lean):
        for a, b in ((sd._D, batch._D), (sd._G, batch._G), (sd._Li, batch._Li)):
            assert np.array_equal(a, b)
    # the steady state's codes are the execution kernel's over the final dictionary: the
    # same bits as transform's and as the native backend's own encode plan
    full = np.flatnonzero(np.r_[0, atoms[:-1]] == 12)
    t = batch.transform(X[s:][full], dense=False)
    ri, rv = _native_reference(batch, X[s:][full], 6)
    for idx, val in ((ci[full], cv[full]), (t.indices, t.values)):
        assert np.array_equal(idx, ri) and np.array_equal(val, rv)


def test_blas_stream_one_row_steady_state_goes_on_after_a_refused_row(blas_and_native):
    """Once the dictionary is full, a one-row partial_fit is one kernel call into bound
    scratch: an Inf is refused with nothing changed (a NaN: see the test above), and the
    rows after it still give the batch's bits."""
    X, _ = _stream(7, n=200)
    kw = dict(l=12, k=6, alpha=0.3, backend="blas")
    one = StreamingDictionary(**kw).partial_fit(X[:100])
    ref = StreamingDictionary(**kw).partial_fit(X[:100])
    assert one.n_atoms_ == 12
    for i in range(100, 120):
        one.partial_fit(X[i:i + 1])
    state = [a.copy() for a in (one._D, one._G, one._Li)]
    seen = one.n_samples_seen_
    bad = X[120:121].copy()
    bad[0, 9] = -np.inf
    with pytest.raises(ValueError, match=r"NaN or Inf .*\(0, 9\)"):
        one.partial_fit(bad)
    assert one.n_samples_seen_ == seen
    assert all(np.array_equal(a, b) for a, b in zip(state, (one._D, one._G, one._Li)))
    for i in range(120, 200):
        one.partial_fit(X[i:i + 1])
    ref.partial_fit(X[100:200])
    assert one.n_samples_seen_ == ref.n_samples_seen_ == 200
    for a, b in ((one._D, ref._D), (one._G, ref._G), (one._Li, ref._Li)):
        assert np.array_equal(a, b)
    got = one.partial_fit_transform(X[:3], dense=False)
    want = ref.partial_fit_transform(X[:3], dense=False)
    assert np.array_equal(got.indices, want.indices) and np.array_equal(got.values, want.values)


def test_blas_stream_resumes_and_matches_without_the_rule(blas_and_native, monkeypatch,
                                                          tmp_path):
    """A saved and reloaded stream continues bit for bit; with the rule off, the dictionary
    (the Wp tests and joins are the backend's own) is the same bits and the codes agree to
    the native kernels' stated tolerance."""
    X, _ = _stream(2)
    kw = dict(l=40, k=6, alpha=0.35, backend="blas")
    on = StreamingDictionary(**kw)
    codes_on = on.partial_fit_transform(X[:200])
    on.save(tmp_path / "mid.npz")
    codes_on2 = on.partial_fit_transform(X[200:])
    resumed = StreamingDictionary.load(tmp_path / "mid.npz")
    assert np.array_equal(resumed.partial_fit_transform(X[200:]), codes_on2)
    assert np.array_equal(resumed._D, on._D) and np.array_equal(resumed._Li, on._Li)
    monkeypatch.setenv("TINYDL_EXECUTION", "backend")
    off = StreamingDictionary(**kw)
    codes_off = off.partial_fit_transform(X[:200])
    codes_off2 = off.partial_fit_transform(X[200:])
    assert off._bws._xplan is None  # its own plan coded the stream
    for a, b in ((on._D, off._D), (on._G, off._G), (on._Li, off._Li)):
        assert np.array_equal(a, b)
    for a, b in ((codes_on, codes_off), (codes_on2, codes_off2)):
        assert np.array_equal(a != 0, b != 0)  # the same supports (no near ties here)
        assert np.abs(a - b).max() <= COEF_TOL * np.abs(b).max()


def test_blas_stream_without_native_codes_on_its_own_plan(blas_and_native, no_native):
    """No C compiler: the stream codes on NumPy's Batch-OMP, still split-independent."""
    X, _ = _stream(6, n=200)
    kw = dict(l=12, k=5, alpha=0.3, backend="blas")
    batch = StreamingDictionary(**kw)
    bi, bv, _ = _feed(batch, X, False)
    one = StreamingDictionary(**kw)
    oi, ov, _ = _feed(one, X, True)
    assert batch.n_atoms_ == 12 and batch._bws._xplan is None
    assert np.array_equal(oi, bi) and np.array_equal(ov, bv)
    assert np.array_equal(one._D, batch._D) and np.array_equal(one._Li, batch._Li)


def test_blas_learner_fuses_the_one_sample_predict(blas_and_native):
    X, y = _stream(3, n=600)
    clf = TinyDLClassifier(l=24, k=5, hidden_layer_sizes=(12,), window=256, n_batch=128,
                           epochs_per_update=2, backend="blas").fit(X[:500], y[:500])
    row = clf._row
    assert row is not None and row.fused is not None
    Xt = X[500:]
    std = clf.standardizer_.transform(Xt)
    ref = clf.transform_.transform(std, dense=False)
    batch = clf.predict(Xt)
    for i in range(len(Xt)):
        z = row.outputs(Xt[i:i + 1]).copy()  # the unfused one-sample path
        label = clf.predict(Xt[i:i + 1])      # the fused kernel
        assert np.array_equal(row.indices[0], ref.indices[i])
        assert np.array_equal(row.values[0], ref.values[i] * clf._code_scale)
        np.testing.assert_allclose(row.fused.out[0], z[0], rtol=0,
                                   atol=1e-5 * float(np.abs(z).max()))
        assert label[0] == clf.classes_[np.argmax(z)] == batch[i]


def test_blas_learner_without_native_keeps_its_path(blas_and_native, no_native):
    X, y = _stream(4, n=500)
    clf = TinyDLClassifier(l=24, k=5, hidden_layer_sizes=(12,), window=256, n_batch=128,
                           epochs_per_update=2, backend="blas").fit(X[:400], y[:400])
    row = clf._row
    assert row is not None and row.fused is None
    Xt = X[400:]
    ref = clf.transform_.transform(clf.standardizer_.transform(Xt), dense=False)
    proba = clf.predict_proba(Xt)
    for i in range(0, 100, 9):
        np.testing.assert_allclose(clf.predict_proba(Xt[i:i + 1])[0], proba[i], rtol=1e-5,
                                   atol=1e-6)
        assert np.array_equal(row.indices[0], ref.indices[i])


def test_cost_model_prices_the_execution_phase_on_the_rule_s_kernels(blas_and_native,
                                                                     monkeypatch):
    """hal.cost: a one-sample transform on blas is priced on the native per-row kernels (the
    given row's products, one call, no per-iteration overhead); without them, or with the
    rule off, on blas's own Batch-OMP."""
    from hal.cost import matmul_cost, predict_inference, predict_transform
    from hal.profile import load_profile
    prof = load_profile("x86-64-host")
    m, l, k = 5625, 100, 20
    ex = predict_transform(prof, m, l, k, 1, backend="blas", kernels="execution")
    own = predict_transform(prof, m, l, k, 1, backend="blas")
    parts = dict(ex.breakdown)
    assert ex.backend == "native" and own.backend == "blas"
    assert parts["correlation"] == matmul_cost(prof, "native", 1, m, l, "float32")[0]
    assert parts["iteration_calls"] == prof.backend("native").call_overhead_s
    assert ex.seconds < own.seconds / 5
    inf = predict_inference(prof, [l, 64, 19], 1, backend="blas", transform=(m, l, k))
    assert dict(inf.breakdown)["transform_correlation"] == parts["correlation"]
    # one sample: the fused predict (one call: no call overhead of the layers), the same
    # prediction as on native itself; two samples: the network on blas, with its calls
    assert dict(inf.breakdown)["call_overhead"] == 0
    assert inf.seconds == predict_inference(prof, [l, 64, 19], 1, backend="native",
                                            transform=(m, l, k)).seconds
    two = predict_inference(prof, [l, 64, 19], 2, backend="blas", transform=(m, l, k))
    assert dict(two.breakdown)["call_overhead"] > 0
    for setting in ("env", "no compiler"):
        with monkeypatch.context() as mp:
            if setting == "env":
                mp.setenv("TINYDL_EXECUTION", "backend")
            else:
                mp.setattr(execution, "_NATIVE", [None])
            off = predict_inference(prof, [l, 64, 19], 1, backend="blas", transform=(m, l, k))
            got = {n[len("transform_"):]: s for n, s in off.breakdown
                   if n.startswith("transform_")}
            assert got == dict(own.breakdown)
    with pytest.raises(ValueError, match="kernels"):
        predict_transform(prof, m, l, k, 1, kernels="fast")


@pytest.mark.parametrize("standardize", [False, True])
def test_blas_steady_state_one_row_refuses_nan_unchanged(blas_and_native, standardize):
    """The steady state's one-call path (the kernel checks finiteness): a row with a NaN
    raises naming it, and nothing changes."""
    X, _ = _stream(5, n=240)
    sd = StreamingDictionary(l=12, k=6, alpha=0.3, standardize=standardize, n_standardize=10,
                             backend="blas").fit(X[:200])
    assert sd.n_atoms_ == 12
    sd.partial_fit(X[200:201])  # the one-call path is bound and used
    D, seen = sd._D.copy(), sd.n_samples_seen_
    bad = X[201:202].copy()
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match=r"NaN or Inf.*\(0, 3\)"):
        sd.partial_fit(bad)
    assert np.array_equal(sd._D, D) and sd.n_samples_seen_ == seen


@pytest.mark.parametrize("dt_copy", [True, False])
def test_a_backend_sized_by_a_plan_codes_on_its_own_kernels(blas_and_native, dt_copy):
    """A plan prices the backend's own OMP workspaces (tinydl.lowmem.plan_backend); the
    native kernels' transposed copy and scratch are not in that price, so such a backend
    keeps the rule off: its transform's plan is the blas one, the rule's default still on."""
    from tinydl.lowmem import plan_backend
    be = plan_backend("blas", batch=16, dt_copy=dt_copy)
    assert execution.execution_backend(be) is be
    assert execution.execution_backend(hal.get_backend("blas")).name == "native"
    X, _ = _stream(3)
    sd = StreamingDictionary(l=12, k=3, alpha=0.3, backend=be).fit(X)
    assert type(sd._bws.exec_plan(sd.n_atoms_, 3)).__module__.startswith("hal.backends.numpy")
