"""The streaming transform (TinyDL Algorithm 2) against a literal transcription of the paper,
on the NumPy backend and on the native one."""
from __future__ import annotations

import inspect
import pathlib
import re
import textwrap
import warnings

import numpy as np
import pytest

from tinydl.io import ModelFileError
from tinydl.omp import SparseCodes
from tinydl.transform import NotFittedError, StreamingDictionary

hyp = pytest.importorskip("hypothesis", reason="hypothesis is not installed")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# every test once on the NumPy backend and once on the native one (see tests/conftest.py)
pytestmark = pytest.mark.usefixtures("each_omp_backend")

REPO = pathlib.Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# The paper, literally: samples as columns, one at a time, explicit (D^T D)^-1, Algorithm 1
# with a least-squares step per iteration.  Reference only: slow and deliberately naive.
# ---------------------------------------------------------------------------------------------
def literal_algorithm1(D, a, k):
    """Algorithm 1: D (m, j) atoms as columns, a (m,), at most k atoms -> c (j,)."""
    j = D.shape[1]
    c = np.zeros(j)
    r = a.copy()
    chosen = []
    for _ in range(min(k, j)):
        i = int(np.argmax(np.abs(D.T @ r)))              # line 4
        if i not in chosen:
            chosen.append(i)
        step, *_ = np.linalg.lstsq(D[:, chosen], r, rcond=None)  # line 5
        c[chosen] += step
        r = r - D[:, chosen] @ step                       # line 6
    return c


def literal_wp(D, a):
    """Line 10 of Algorithm 2 with the explicit inverse (line 8: 1 while D is empty)."""
    if D.shape[1] == 0:
        return 1.0
    proj = D @ np.linalg.inv(D.T @ D) @ D.T @ a
    return np.linalg.norm(proj - a) / np.linalg.norm(a)


def literal_algorithm2(A, alpha, k, l):
    """Algorithm 2's transformation on A (m, n): returns D (m, j) and C (l, n)."""
    m, n = A.shape
    D = np.zeros((m, 0))
    C = np.zeros((l, n))
    j = 0
    for i in range(n):
        a = A[:, i]
        wp = literal_wp(D, a)
        if wp > alpha and j < l:                          # line 11
            norm = np.linalg.norm(a)
            D = np.column_stack([D, a / norm])            # line 12 (see notes/facts.md)
            C[j, i] = norm                                # line 13
            j += 1
        elif j:
            C[:j, i] = literal_algorithm1(D, a, k)        # line 16
    return D, C


def subspace_stream(seed, n=120, m=14, rank=6, noise=0.25, dtype=np.float64):
    """Samples near a low-dimensional subspace: some join D, most are coded."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, m))
    X += noise * rng.standard_normal((n, m))
    return X.astype(dtype)


def state_of(sd):
    """Every array of the fitted state (a deep copy), for before/after comparisons."""
    return {key: np.array(v, copy=True) for key, v in sd._state_arrays().items()}


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key


# ---------------------------------------------------------------------------------------------
# Must show 1: against the literal transcription
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,alpha,k,l", [(0, 0.3, 3, 8), (1, 0.5, 4, 10), (2, 0.1, 2, 5),
                                            (3, 0.25, 6, 30)])
def test_matches_literal_algorithm2_float64(seed, alpha, k, l):
    X = subspace_stream(seed)
    D_ref, C_ref = literal_algorithm2(X.T, alpha, k, l)
    sd = StreamingDictionary(l=l, k=k, alpha=alpha, block=16)
    codes = sd.fit_transform(X)
    assert sd.n_atoms_ == D_ref.shape[1]
    np.testing.assert_allclose(sd.dictionary_, D_ref.T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(codes, C_ref.T, rtol=0, atol=1e-9)
    # the decisions themselves: a joining sample is coded by its norm on its own atom
    joined = np.flatnonzero((C_ref != 0).sum(0) == 1)
    assert len(joined) >= min(l, 2)


def test_matches_literal_algorithm2_float32():
    X = subspace_stream(4)
    D_ref, C_ref = literal_algorithm2(X.T, 0.3, 3, 8)
    sd = StreamingDictionary(l=8, k=3, alpha=0.3, dtype="float32")
    codes = sd.fit_transform(X)
    assert codes.dtype == np.float32 and sd.dictionary_.dtype == np.float32
    np.testing.assert_allclose(sd.dictionary_, D_ref.T, atol=1e-5)
    np.testing.assert_allclose(codes, C_ref.T, atol=2e-4 * np.abs(C_ref).max())


def test_projection_error_matches_explicit_inverse():
    X = subspace_stream(5)
    sd = StreamingDictionary(l=6, k=3, alpha=0.3, block=8).fit(X[:60])
    D = sd.dictionary_.T
    Y = subspace_stream(6, n=40)
    want = np.array([literal_wp(D, y) for y in Y])
    np.testing.assert_allclose(sd.projection_error(Y), want, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Hypothesis properties
# ---------------------------------------------------------------------------------------------
@st.composite
def split_points(draw, n):
    cuts = draw(st.lists(st.integers(1, n - 1), max_size=8, unique=True))
    return [0] + sorted(cuts) + [n]


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2 ** 16), data=st.data(),
       dtype=st.sampled_from([np.float32, np.float64]), n=st.integers(2, 150),
       block=st.sampled_from([1, 3, 16, 64]), alpha=st.sampled_from([0.0, 0.2, 0.45]),
       l=st.integers(1, 12), k=st.integers(1, 5))
def test_batches_identical_to_one_at_a_time(seed, data, dtype, n, block, alpha, l, k):
    X = subspace_stream(seed, n=n, m=11, rank=5, dtype=dtype)
    X[data.draw(st.integers(0, n - 1))] = 0  # a zero sample somewhere in the stream
    cuts = data.draw(split_points(n))
    whole = StreamingDictionary(l=l, k=k, alpha=alpha, block=block)
    ref = whole.fit_transform(X)
    split = StreamingDictionary(l=l, k=k, alpha=alpha, block=block)
    parts = [split.partial_fit_transform(X[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    single = StreamingDictionary(l=l, k=k, alpha=alpha, block=block)
    ones = [single.partial_fit_transform(X[i:i + 1]) for i in range(n)]
    assert np.array_equal(np.concatenate(parts), ref)
    assert np.array_equal(np.concatenate(ones), ref)
    assert_same_state(state_of(split), state_of(whole))
    assert_same_state(state_of(single), state_of(whole))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 16), data=st.data(),
       dtype=st.sampled_from([np.float32, np.float64]), m=st.sampled_from([37, 300, 2100]),
       n=st.integers(2, 40), l=st.integers(1, 30))
def test_batches_identical_with_runs_of_joins(seed, data, dtype, m, n, l):
    """Long rows (the native join kernels' vector steps, tails and column chunks) and full-rank
    noise, so that row after row joins D and batches often end or start right after a join."""
    X = np.random.default_rng(seed).standard_normal((n, m)).astype(dtype)
    cuts = data.draw(split_points(n))
    whole = StreamingDictionary(l=l, k=3, alpha=0.3)
    ref = whole.fit_transform(X)
    split = StreamingDictionary(l=l, k=3, alpha=0.3)
    parts = [split.partial_fit_transform(X[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    assert np.array_equal(np.concatenate(parts), ref)
    assert_same_state(state_of(split), state_of(whole))
    # noise rows all join where they are far fewer than the dimensions; at m=37 a row's
    # residual off 26 atoms can fall under alpha (seed=21854, n=l=27: 26 atoms)
    assert whole.n_atoms_ == min(n, l) if m >= 300 else 0 < whole.n_atoms_ <= min(n, l)
    if whole._be.name == "native":  # the join kernels are what runs there
        assert whole._bws is not None


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 16), data=st.data(), n_std=st.integers(1, 40))
def test_standardized_stream_identical_across_splits(seed, data, n_std):
    X = subspace_stream(seed, n=60, m=9, rank=4) * np.linspace(0.1, 50, 9) + 3
    X[:, 2] = 7.0  # a constant feature must not divide by zero
    cuts = data.draw(split_points(60))
    whole = StreamingDictionary(l=6, k=3, alpha=0.3, standardize=True, n_standardize=n_std)
    whole.fit(X)
    split = StreamingDictionary(l=6, k=3, alpha=0.3, standardize=True, n_standardize=n_std)
    for a, b in zip(cuts[:-1], cuts[1:]):
        split.partial_fit(X[a:b])
    assert_same_state(state_of(split), state_of(whole))
    assert np.isfinite(whole.dictionary_).all() and whole.scale_[2] == 1
    assert np.array_equal(split.transform(X), whole.transform(X))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 16), dtype=st.sampled_from([np.float32, np.float64]),
       n_atoms=st.integers(1, 9))
def test_projection_error_in_unit_interval_and_zero_in_span(seed, dtype, n_atoms):
    rng = np.random.default_rng(seed)
    m = 12
    X = (rng.standard_normal((n_atoms, m)) * rng.uniform(0.01, 100, (n_atoms, 1)))
    sd = StreamingDictionary(l=n_atoms, k=3, alpha=0.0, dtype=dtype).fit(X.astype(dtype))
    assert sd.n_atoms_ == n_atoms  # generic vectors: every one joins
    Y = rng.standard_normal((30, m)) * rng.uniform(1e-3, 1e3, (30, 1))
    wp = sd.projection_error(Y.astype(dtype))
    assert wp.dtype == dtype and ((wp >= 0) & (wp <= 1)).all()
    in_span = rng.standard_normal((20, n_atoms)) @ X
    wp_in = sd.projection_error(in_span.astype(dtype))
    assert (wp_in <= (1e-10 if dtype == np.float64 else 2e-3)).all(), wp_in.max()
    # those samples would never join, even with alpha = 0
    if n_atoms < 9:
        grown = StreamingDictionary(l=n_atoms + 1, k=3, alpha=0.0, dtype=dtype)
        grown.fit(np.concatenate([X, in_span]).astype(dtype))
        assert grown.n_atoms_ == n_atoms


# ---------------------------------------------------------------------------------------------
# Behaviour
# ---------------------------------------------------------------------------------------------
def test_atoms_unit_norm_and_joiner_coded_by_its_norm():
    X = subspace_stream(7)
    sd = StreamingDictionary(l=10, k=3, alpha=0.3)
    codes = sd.fit_transform(X)
    np.testing.assert_allclose(np.linalg.norm(sd.dictionary_, axis=1), 1, atol=1e-14)
    joined = np.flatnonzero((codes != 0).sum(1) == 1)[:sd.n_atoms_]
    for atom, i in enumerate(joined):
        assert codes[i, atom] == pytest.approx(np.linalg.norm(X[i]), rel=1e-14)
        np.testing.assert_allclose(codes[i] @ sd.dictionary_, X[i], atol=1e-12)
    # the state behind Wp: G = D D^T, and Li the inverse of G's Cholesky factor (lower
    # triangular, positive diagonal): Li G Li^T = I, inv(Li) = cholesky(G)
    n = sd.n_atoms_
    D, G, Li = sd.dictionary_, sd._G[:n, :n], sd._Li[:n, :n]
    np.testing.assert_allclose(G, D @ D.T, atol=1e-13)
    assert np.array_equal(Li, np.tril(Li)) and (np.diag(Li) > 0).all()
    np.testing.assert_allclose(Li @ G @ Li.T, np.eye(n), atol=1e-12)
    np.testing.assert_allclose(np.linalg.inv(Li), np.linalg.cholesky(D @ D.T), atol=1e-12)


def test_zero_samples_and_extreme_alphas():
    X = subspace_stream(8, n=40)
    X[0] = 0
    X[5] = 0
    sd = StreamingDictionary(l=5, k=2, alpha=0.3)
    codes = sd.fit_transform(X)
    assert not codes[0].any() and not codes[5].any()
    assert sd.projection_error(np.zeros((1, X.shape[1])))[0] == 0
    none = StreamingDictionary(l=5, k=2, alpha=1.0)
    assert not none.fit_transform(X).any() and none.n_atoms_ == 0
    assert not none.transform(X).any()
    np.testing.assert_array_equal(none.projection_error(X[1:3]), [1, 1])
    every = StreamingDictionary(l=5, k=2, alpha=0.0).fit(X)
    np.testing.assert_allclose(every.dictionary_[0], X[1] / np.linalg.norm(X[1]))


def test_steady_state_is_plain_omp_and_transform_changes_nothing():
    from tinydl.omp import omp
    X = subspace_stream(9, n=200)
    sd = StreamingDictionary(l=6, k=3, alpha=0.2).fit(X[:100])
    assert sd.n_atoms_ == 6
    before = state_of(sd)
    t = sd.transform(X[100:])
    assert_same_state(before, state_of(sd))
    streamed = sd.partial_fit_transform(X[100:])
    assert np.array_equal(streamed, t)
    np.testing.assert_allclose(t, omp(X[100:], sd.dictionary_, 3), atol=1e-12)
    after = state_of(sd)
    for key in ("D", "Linv", "G"):
        assert np.array_equal(before[key], after[key])
    assert sd.n_samples_seen_ == 200


def test_compact_codes_and_width():
    X = subspace_stream(10, n=60)
    sd = StreamingDictionary(l=20, k=3, alpha=0.6)
    compact = sd.fit_transform(X, dense=False)
    assert isinstance(compact, SparseCodes) and compact.indices.shape == (60, 3)
    assert compact.n_atoms == 20 and sd.n_atoms_ < 20  # the width is l while D fills
    dense = StreamingDictionary(l=20, k=3, alpha=0.6).fit_transform(X)
    assert dense.shape == (60, 20) and np.array_equal(compact.to_dense(), dense)
    assert not dense[:, sd.n_atoms_:].any()
    assert np.array_equal(sd.transform(X, dense=False).to_dense(), sd.transform(X))


def test_input_dtypes_converted_as_documented():
    Xi = np.random.default_rng(0).integers(-5, 5, (30, 7))
    sd = StreamingDictionary(l=4, k=2).fit(Xi)
    assert sd.dtype_ == np.float64
    sd16 = StreamingDictionary(l=4, k=2).fit(Xi.astype(np.float16))
    assert sd16.dtype_ == np.float32
    np.testing.assert_allclose(sd16.dictionary_, sd.dictionary_, atol=1e-6)
    # later batches follow the dtype fixed by the first
    assert sd16.partial_fit_transform(Xi[:3].astype(np.float64)).dtype == np.float32


def test_memory_fixed_while_stream_grows():
    X = subspace_stream(11, n=2000, m=20)

    def nbytes(sd):
        return sum(v.nbytes for v in sd.__dict__.values() if isinstance(v, np.ndarray))

    sd = StreamingDictionary(l=8, k=3, alpha=0.3, block=16)
    sd.partial_fit(X[:100])
    first = nbytes(sd)
    for s in range(100, 2000, 100):
        sd.partial_fit(X[s:s + 100])
    assert nbytes(sd) == first
    assert first < 8 * (3 * 8 * 20 + 8 * 8 + 3 * 16 * 20 + 16 * 8 + 64)


def test_standardization_rules():
    X = subspace_stream(12, n=50) * 10 + 4
    sd = StreamingDictionary(l=5, k=2, standardize=True, n_standardize=20)
    sd.partial_fit(X[:10])
    assert sd.mean_ is None and sd.n_atoms_ == 0 and sd.n_samples_seen_ == 10
    with pytest.raises(NotFittedError, match="n_standardize=20"):
        sd.transform(X)
    before = state_of(sd)
    with pytest.raises(ValueError, match="only 15 have arrived"):
        sd.partial_fit_transform(X[10:15])
    assert_same_state(before, state_of(sd))
    codes = sd.partial_fit_transform(X[10:50])
    assert codes.shape == (40, 5)
    np.testing.assert_allclose(sd.mean_, X[:20].mean(0), rtol=1e-12)
    np.testing.assert_allclose(sd.scale_, X[:20].std(0), rtol=1e-12)
    ref = StreamingDictionary(l=5, k=2, standardize=True, n_standardize=20).fit_transform(X)
    assert np.array_equal(ref[10:], codes)
    # fit on fewer samples than n_standardize uses them all
    short = StreamingDictionary(l=5, k=2, standardize=True, n_standardize=500).fit(X)
    np.testing.assert_allclose(short.mean_, X.mean(0), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Must show 2: bad input raises a clear error and changes nothing
# ---------------------------------------------------------------------------------------------
def _bad_batches(m):
    nan = np.ones((3, m))
    nan[1, 2] = np.nan
    inf = np.ones((3, m))
    inf[0, 0] = np.inf
    return [
        (nan, ValueError, "NaN or Inf"),
        (inf, ValueError, "NaN or Inf"),
        (np.ones((3, m + 1)), ValueError,
         f"{m + 1} features, but StreamingDictionary is expecting {m}"),
        (np.ones(m), ValueError, "must be 2-D"),
        (np.ones((2, m, 1)), ValueError, "must be 2-D"),
        (np.ones((0, m)), ValueError, "empty"),
        (np.ones((2, m), complex), TypeError, "real numbers"),
        (np.array([["a"] * m]), TypeError, "real numbers"),
    ]


@pytest.mark.parametrize("case", range(8))
@pytest.mark.parametrize("method", ["partial_fit", "partial_fit_transform", "transform",
                                    "projection_error"])
def test_bad_batches_leave_state_unchanged(case, method):
    X = subspace_stream(13, n=40, m=10)
    sd = StreamingDictionary(l=6, k=2, alpha=0.3).fit(X)
    before = state_of(sd)
    bad, exc, msg = _bad_batches(10)[case]
    with pytest.raises(exc, match=msg):
        getattr(sd, method)(bad)
    assert_same_state(before, state_of(sd))
    assert np.array_equal(sd.partial_fit_transform(X[:5]),  # and it still works
                          StreamingDictionary(l=6, k=2).fit(X).partial_fit_transform(X[:5]))


@pytest.mark.parametrize("param,value,exc,msg", [
    ("k", 0, ValueError, r"k must be in \[1, inf\], got 0"),
    ("l", 0, ValueError, r"l must be in \[1, inf\], got 0"),
    ("alpha", -0.1, ValueError, r"alpha must be in \[0.0, 1.0\], got -0.1"),
    ("alpha", 1.5, ValueError, r"alpha must be in \[0.0, 1.0\], got 1.5"),
    ("alpha", float("nan"), ValueError, "alpha must be in"),
    ("k", 2.5, TypeError, "k must be an integer"),
    ("n_standardize", 0, ValueError, "n_standardize must be in"),
    ("block", 0, ValueError, "block must be in"),
    ("tol", -1.0, ValueError, "tol must be in"),
    ("dtype", "float16", TypeError, "float32 or float64, got float16"),
    ("dtype", "int64", TypeError, "float32 or float64"),
    ("standardize", "yes", TypeError, "standardize must be True or False"),
])
def test_bad_parameters_raise_before_anything_changes(param, value, exc, msg):
    X = subspace_stream(14, n=40, m=10)
    sd = StreamingDictionary(l=6, k=2, alpha=0.3).fit(X)
    before = state_of(sd)
    sd.set_params(**{param: value})
    for method in ("partial_fit", "partial_fit_transform", "fit"):
        with pytest.raises(exc, match=msg):
            getattr(sd, method)(X)
        assert_same_state(before, state_of(sd))
    fresh = StreamingDictionary(**{param: value})
    with pytest.raises(exc, match=msg):
        fresh.partial_fit(X)
    assert not fresh._fitted()


def test_structural_parameter_change_mid_stream_refused():
    X = subspace_stream(15, n=40, m=10)
    sd = StreamingDictionary(l=6, k=2).fit(X)
    before = state_of(sd)
    sd.l = 8
    with pytest.raises(ValueError, match="l changed from 6 to 8"):
        sd.partial_fit(X)
    assert_same_state(before, state_of(sd))
    sd.fit(X)  # fit restarts with the new l
    assert sd._D.shape[0] == 8


def test_fit_with_bad_input_keeps_previous_fit():
    X = subspace_stream(16, n=40, m=10)
    sd = StreamingDictionary(l=6, k=2).fit(X)
    before = state_of(sd)
    with pytest.raises(ValueError, match="NaN"):
        sd.fit(np.full((4, 10), np.nan))
    assert_same_state(before, state_of(sd))


def test_not_fitted():
    sd = StreamingDictionary()
    assert not hasattr(sd, "dictionary_")
    for call in (lambda: sd.dictionary_, lambda: sd.transform(np.ones((1, 3))),
                 lambda: sd.projection_error(np.ones((1, 3)))):
        with pytest.raises(NotFittedError, match="seen no sample"):
            call()


# ---------------------------------------------------------------------------------------------
# Persistence: a loaded transform continues the stream exactly
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("standardize,cut", [(False, 30), (True, 30), (True, 7)])
def test_save_load_continues_stream(tmp_path, standardize, cut):
    X = subspace_stream(17, n=120, m=10) * 3 + 1
    kw = dict(l=9, k=3, alpha=0.35, standardize=standardize, n_standardize=20, tol=1e-6,
              dtype="float32", block=8)
    ref = StreamingDictionary(**kw)
    ref.partial_fit(X[:cut])
    first = StreamingDictionary(**kw)
    first.partial_fit(X[:cut])
    first.save(tmp_path / "t.npz")
    loaded = StreamingDictionary.load(tmp_path / "t.npz")
    assert loaded.get_params() == {**first.get_params(), "dtype": "float32"}
    assert_same_state(state_of(loaded), state_of(first))
    a = ref.partial_fit_transform(X[cut:])
    b = loaded.partial_fit_transform(X[cut:])
    assert np.array_equal(a, b)
    assert_same_state(state_of(loaded), state_of(ref))


def test_save_load_unfitted_and_damaged(tmp_path):
    StreamingDictionary(l=3, k=2, alpha=0.5).save(tmp_path / "u.npz")
    u = StreamingDictionary.load(tmp_path / "u.npz")
    assert (u.l, u.k, u.alpha, u.tol, u.dtype) == (3, 2, 0.5, None, None)
    assert not u._fitted()
    sd = StreamingDictionary(l=4, k=2).fit(subspace_stream(18, n=30, m=6))
    path = tmp_path / "t.npz"
    sd.save(path)
    raw = path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[:len(raw) // 2])
    with pytest.raises(ModelFileError):
        StreamingDictionary.load(tmp_path / "trunc.npz")
    # a file whose arrays disagree (D with the wrong shape) is refused, not half-loaded
    from tinydl.io import load_npz, save_npz
    data = load_npz(path, "transform", max_version=3)
    # a version-1 file (an orthonormal basis Q and D = L Q instead of Linv) still loads
    v1 = dict(data)
    L = np.linalg.inv(v1.pop("Linv"))
    v1["L"], v1["Q"] = L, np.linalg.solve(L, v1["D"])
    save_npz(tmp_path / "v1.npz", v1, "transform", 1)
    old = StreamingDictionary.load(tmp_path / "v1.npz")
    np.testing.assert_allclose(old._Li[:old.n_atoms_, :old.n_atoms_], data["Linv"], atol=1e-12)
    Z = subspace_stream(19, n=10, m=6)
    np.testing.assert_allclose(old.transform(Z), sd.transform(Z), atol=1e-10)
    data["D"] = data["D"][:, :3]
    save_npz(tmp_path / "bad.npz", data, "transform")
    with pytest.raises(ModelFileError, match="D should be"):
        StreamingDictionary.load(tmp_path / "bad.npz")
    save_npz(tmp_path / "other.npz", data, "classifier")
    with pytest.raises(ModelFileError, match="expected a 'transform'"):
        StreamingDictionary.load(tmp_path / "other.npz")


# ---------------------------------------------------------------------------------------------
# Must show 5: the quick start of docs/transform.md runs as pasted
# ---------------------------------------------------------------------------------------------
def quick_start():
    import numpy as np

    from tinydl.transform import StreamingDictionary

    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 8)) @ rng.standard_normal((8, 64))  # 500 samples, m=64

    sd = StreamingDictionary(l=16, k=8, alpha=0.3)
    codes = sd.partial_fit_transform(X[:300])   # training phase: D grows from the stream
    print(sd.n_atoms_, codes.shape)             # at most l atoms; codes are (300, l)
    new_codes = sd.transform(X[300:])           # execution phase: OMP on the fixed D
    print(np.abs(sd.reconstruct(new_codes) - X[300:]).max())
    sd.save("transform.npz")
    same = StreamingDictionary.load("transform.npz")
    print((same.transform(X[300:]) == new_codes).all())


def test_quick_start_runs_and_matches_docs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    quick_start()
    out = capsys.readouterr().out.split("\n")
    assert out[0] == "8 (300, 16)"  # 8 independent directions: exactly 8 atoms join
    assert float(out[1]) < 1e-9 and out[2] == "True"
    doc = (REPO / "docs" / "transform.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    body = textwrap.dedent("".join(inspect.getsource(quick_start).splitlines(True)[1:]))
    assert body.strip() in [b.strip() for b in blocks], "docs/transform.md quick start drifted"


def test_linear_dependence_never_nan():
    X = subspace_stream(19, n=60, m=8, rank=3, noise=0.0)
    sd = StreamingDictionary(l=8, k=5, alpha=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        codes = sd.fit_transform(X)
    assert sd.n_atoms_ == 3 and np.isfinite(codes).all()
    np.testing.assert_allclose(sd.reconstruct(codes), X, atol=1e-9)
