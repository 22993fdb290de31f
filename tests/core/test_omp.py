"""Batch-OMP (``tinydl.omp``) against independent references, on the NumPy backend (the
specification) and on the native backend (C kernels) where it can be built.

References: a literal transcription of the TinyDL paper's Algorithm 1 (one sample at a time,
a least-squares problem each iteration solved with the explicit ``(D^T D)^-1`` the paper
writes; ``hal.backends.numpy.omp_textbook``, beside the Batch-OMP it specifies),
scikit-learn's ``orthogonal_mp_gram`` and ``numpy.linalg.lstsq``.  Every test
runs once per backend (``each_omp_backend`` in tests/conftest.py sets ``TINYDL_BACKEND``,
which ``omp`` reads).
"""
from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

from hal.backends.numpy import LinearDependenceWarning, NumpyBackend
from hal.backends.numpy import omp_textbook as paper_omp  # the literal Algorithm 1
from tinydl.omp import SparseCodes, codes_to_dense, omp

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = pytest.mark.usefixtures("each_omp_backend")


# -- references -----------------------------------------------------------------------------
def unit_dictionary(rng, l, m, dtype=np.float64):
    D = rng.standard_normal((l, m))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    return D.astype(dtype)


def support_in_order(indices):
    return [int(i) for i in indices if i >= 0]


# -- against Algorithm 1 ---------------------------------------------------------------------
def test_matches_paper_algorithm_1():
    rng = np.random.default_rng(0)
    D = unit_dictionary(rng, 30, 60)
    X = rng.standard_normal((25, 60))
    k = 6
    codes = omp(X, D, k, return_dense=False)
    dense = codes.to_dense()
    for i in range(X.shape[0]):
        ref, support = paper_omp(X[i], D.T, k)
        assert support_in_order(codes.indices[i]) == support
        np.testing.assert_allclose(dense[i], ref, rtol=0, atol=1e-10)


# -- against scikit-learn --------------------------------------------------------------------
@pytest.mark.parametrize("dtype,atol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_matches_sklearn_orthogonal_mp_gram(dtype, atol):
    sk = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(1)
    m, l, k = 80, 40, 8
    D = unit_dictionary(rng, l, m, dtype)
    X = rng.standard_normal((60, m)).astype(dtype)
    ours = omp(X, D, k)
    assert ours.dtype == dtype
    # the reference runs in float64 on the very same (possibly float32-rounded) numbers
    D64, X64 = D.astype(np.float64), X.astype(np.float64)
    ref = sk.orthogonal_mp_gram(D64 @ D64.T, D64 @ X64.T, n_nonzero_coefs=k).T
    np.testing.assert_array_equal(ours != 0, ref != 0)
    scale = np.maximum(1.0, np.abs(ref))
    assert np.max(np.abs(ours - ref) / scale) <= atol


def _overcomplete_sparse(seed, n=40, l=35, m=25, s=5):
    """Issue 17: more atoms than dimensions (35 in R^25), exactly s-sparse signals."""
    rng = np.random.default_rng(seed)
    D = unit_dictionary(rng, l, m)
    C = np.zeros((n, l))
    for i in range(n):
        C[i, rng.choice(l, s, replace=False)] = rng.uniform(1, 2, s) * rng.choice([-1, 1], s)
    return D, C @ D, C


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k_above_the_rank_stops_at_the_rank_and_matches_sklearn(seed):
    # k = 35 > rank 25: each sample stops at the rank of its chosen atoms (here the 5 true
    # atoms, which represent it exactly) instead of fitting 20 more atoms to rounding noise
    # (25-26 non-zeros and coefficients off by up to 0.72 before), and says so once
    sk = pytest.importorskip("sklearn.linear_model")
    D, X, C = _overcomplete_sparse(seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        codes = omp(X, D, 35)
    ours = [w for w in caught if issubclass(w.category, LinearDependenceWarning)]
    assert len(ours) == 1
    assert f"stopped early for {X.shape[0]} of {X.shape[0]} samples" in str(ours[0].message)
    assert "k=35 exceeds the 25 dimensions" in str(ours[0].message)
    np.testing.assert_allclose(codes @ D, X, rtol=0, atol=1e-10)
    # where OMP's greedy choice finds the true support (most samples), the code is exact
    found = (codes != 0).sum(axis=1) == 5
    assert found.mean() >= 0.7
    np.testing.assert_allclose(codes[found], C[found], rtol=0, atol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # sklearn's "ended prematurely"
        ref = sk.orthogonal_mp_gram(D @ D.T, D @ X.T, n_nonzero_coefs=35).T
    # the same codes (scikit-learn's absolute eps threshold lets a sample or two take one
    # more atom at rounding level, with a coefficient at rounding level)
    np.testing.assert_allclose(codes, ref, rtol=0, atol=1e-8 * max(1.0, np.abs(ref).max()))
    assert np.mean(np.all((codes != 0) == (ref != 0), axis=1)) >= 0.8


def test_k_above_the_rank_on_generic_signals_is_least_squares():
    # random signals in R^25, 35 random atoms, k = 35: at most 25 atoms, fitted exactly (the
    # coefficients were off by up to 180 before: atoms fitted to rounding noise)
    rng = np.random.default_rng(3)
    D = unit_dictionary(rng, 35, 25)
    X = rng.standard_normal((30, 25))
    with pytest.warns(LinearDependenceWarning, match="stopped early for 30 of 30 samples"):
        codes, rsq = omp(X, D, 35, return_residual=True)
    nnz = (codes != 0).sum(axis=1)
    assert nnz.max() <= 25
    np.testing.assert_allclose(codes @ D, X, atol=1e-9)
    assert np.all(rsq <= 1e-12 * (X ** 2).sum(axis=1))   # |x|^2 - sum z^2: rounding level
    for i in range(X.shape[0]):
        sup = np.flatnonzero(codes[i])
        ref = np.linalg.lstsq(D[sup].T, X[i], rcond=None)[0]
        np.testing.assert_allclose(codes[i, sup], ref, rtol=1e-6, atol=1e-8)


def test_k_within_the_rank_does_not_warn_when_represented():
    D, X, C = _overcomplete_sparse(4, l=35, m=25, s=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        codes = omp(X, D, 25)
    np.testing.assert_allclose(codes @ D, X, rtol=0, atol=1e-10)
    assert (codes != 0).sum(axis=1).max() <= 25


# -- hypothesis properties -------------------------------------------------------------------
@st.composite
def problems(draw):
    seed = draw(st.integers(0, 2 ** 32 - 1))
    l = draw(st.integers(1, 24))
    m = draw(st.integers(l, 48))          # m >= l: the atoms are independent (a.s.)
    n = draw(st.integers(1, 20))
    k = draw(st.integers(1, l + 3))       # k > l is allowed and clipped
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(seed)
    return unit_dictionary(rng, l, m, dtype), rng.standard_normal((n, m)).astype(dtype), k


@given(problems())
@settings(max_examples=40, deadline=None)
def test_nonzeros_and_orthogonal_residual(prob):
    D, X, k = prob
    codes, rsq = omp(X, D, k, return_dense=False, return_residual=True)
    dense = codes.to_dense()
    assert codes.indices.shape == (X.shape[0], min(k, D.shape[0]))
    assert np.all((dense != 0).sum(axis=1) <= k)
    assert np.isfinite(dense).all()
    D64, X64 = D.astype(np.float64), X.astype(np.float64)
    R = X64 - dense.astype(np.float64) @ D64
    eps = np.finfo(X.dtype).eps
    xnorm = np.linalg.norm(X64, axis=1)
    # r = x - D_I z is formed from terms of size |x| + |z| (unit atoms); on an ill-conditioned
    # D_I (random square dictionaries: cond ~1e4 seen, |z| ~1e3 |x|) |z| >> |x|, and rounding
    # scales with it (hypothesis seed 19: 1.9e-13 against eps |z| = 3.5e-13)
    scale = xnorm + np.linalg.norm(dense.astype(np.float64), axis=1)
    for i in range(X.shape[0]):
        chosen = support_in_order(codes.indices[i])
        assert len(set(chosen)) == len(chosen)       # no atom twice
        # the residual is orthogonal to every chosen atom (relative to |x| + |z|)
        assert np.all(np.abs(D64[chosen] @ R[i]) <= 200 * eps * max(scale[i], 1e-30))
    # |x|^2 - sum_t z_t^2 loses ~cond(D_I) eps |x|^2: compare per sample, relative to
    # |x| (|x| + |z|)
    assert np.all(np.abs(rsq - (R ** 2).sum(axis=1)) <= 1e4 * eps * xnorm * scale)


@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 3), st.sampled_from([np.float32, np.float64]))
@settings(max_examples=30, deadline=None)
def test_exact_support_recovery(seed, s, dtype):
    # Tropp (2004): OMP recovers every s-sparse signal when mu (2s - 1) < 1
    rng = np.random.default_rng(seed)
    l, m = 24, 512
    D = unit_dictionary(rng, l, m)
    G = np.abs(D @ D.T - np.eye(l))
    assume(G.max() * (2 * s - 1) < 1)   # holds for almost every draw at these sizes
    n = 8
    truth = np.zeros((n, l))
    for i in range(n):
        sup = rng.choice(l, s, replace=False)
        truth[i, sup] = rng.choice([-1, 1], s) * rng.uniform(0.5, 2.0, s)
    X = (truth @ D).astype(dtype)
    codes = omp(X, D.astype(dtype), s)
    np.testing.assert_array_equal(codes != 0, truth != 0)
    np.testing.assert_allclose(codes, truth, atol=50 * np.finfo(dtype).eps * 4)


@given(st.integers(0, 2 ** 32 - 1), st.lists(st.integers(1, 90), min_size=1, max_size=6),
       st.sampled_from([np.float32, np.float64]))
@settings(max_examples=25, deadline=None)
def test_codes_do_not_depend_on_the_batch(seed, cuts, dtype):
    # bit-identical with one BLAS thread (tests/conftest.py sets it): every product that
    # mixes rows runs on fixed `block`-row blocks
    rng = np.random.default_rng(seed)
    D = unit_dictionary(rng, 30, 70, dtype)
    X = rng.standard_normal((200, 70)).astype(dtype)
    be = NumpyBackend(block=16, batch=48)
    G = D @ D.T
    whole = be.omp_encode(X, D, G, 7)
    bounds = np.unique(np.clip(np.cumsum(cuts), 0, 200))
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [200]])
    for s, e in zip(starts, ends):
        if s == e:
            continue
        part = be.omp_encode(X[s:e], D, G, 7)
        np.testing.assert_array_equal(part.indices, whole.indices[s:e])
        np.testing.assert_array_equal(part.values, whole.values[s:e])
        np.testing.assert_array_equal(part.residual_sq, whole.residual_sq[s:e])


def test_single_sample_is_bit_identical_to_batch():
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        D = unit_dictionary(rng, 100, 120, dtype)
        X = rng.standard_normal((130, 120)).astype(dtype)
        whole = omp(X, D, 20)
        for i in (0, 64, 129):
            np.testing.assert_array_equal(omp(X[i:i + 1], D, 20), whole[i:i + 1])


# -- documented edge cases -------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype):
    rng = np.random.default_rng(4)
    D = unit_dictionary(rng, 10, 20, dtype)
    X = rng.standard_normal((5, 20)).astype(dtype)
    codes, rsq = omp(X, D, 3, return_residual=True)
    assert codes.dtype == dtype and rsq.dtype == dtype
    sc = omp(X, D, 3, return_dense=False)
    assert sc.values.dtype == dtype and sc.indices.dtype == np.int32


def test_integer_input_becomes_float64():
    D = np.eye(4)
    codes = omp(np.array([[3, 0, 0, 1]]), D, 2)
    assert codes.dtype == np.float64
    np.testing.assert_array_equal(codes, [[3.0, 0, 0, 1.0]])


def test_k_above_atoms_is_least_squares():
    rng = np.random.default_rng(5)
    D = unit_dictionary(rng, 8, 30)
    X = rng.standard_normal((6, 30))
    codes = omp(X, D, 50)
    ref = np.linalg.lstsq(D.T, X.T, rcond=None)[0].T
    np.testing.assert_allclose(codes, ref, atol=1e-10)
    np.testing.assert_array_equal(omp(X, D, 8), codes)


def test_dependent_atoms_warn_and_never_nan():
    rng = np.random.default_rng(6)
    base = unit_dictionary(rng, 5, 12)
    mix = base[0] + base[1]
    D = np.vstack([base, mix / np.linalg.norm(mix), base[2]])   # two dependent atoms
    X = rng.standard_normal((20, 12))
    with pytest.warns(LinearDependenceWarning, match="linearly dependent"):
        codes, rsq = omp(X, D, 7, return_residual=True)
    assert np.isfinite(codes).all() and np.isfinite(rsq).all()
    # it still fits as well as least squares on the span of the independent atoms
    best = np.linalg.lstsq(base.T, X.T, rcond=None)[0].T
    best_r = ((X - best @ base) ** 2).sum(axis=1)
    np.testing.assert_allclose(((X - codes @ D) ** 2).sum(axis=1), best_r, rtol=1e-8)


@pytest.mark.parametrize("backend", ["numpy", "blas", "native", "multiprocessing"])
def test_dependent_atoms_warning_points_at_the_callers_line(backend, require_backend):
    # however many library frames the call goes through (backend, plan, runner), the
    # warning names this file and line, not a line inside hal/ or tinydl/
    require_backend(backend)
    rng = np.random.default_rng(6)
    base = unit_dictionary(rng, 5, 12)
    D = np.vstack([base, base[:1]]).astype(np.float32)
    X = rng.standard_normal((6, 12)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        omp(X, D, 6, backend=backend)
    hits = [w for w in caught if issubclass(w.category, LinearDependenceWarning)]
    assert hits, "no LinearDependenceWarning"
    assert all((w.filename, w.lineno) == (__file__, line) for w in hits), \
        [(w.filename, w.lineno) for w in hits]


def test_zero_samples_give_zero_codes():
    rng = np.random.default_rng(7)
    D = unit_dictionary(rng, 10, 16)
    X = rng.standard_normal((4, 16))
    X[[1, 3]] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sc, rsq = omp(X, D, 4, return_dense=False, return_residual=True)
    assert np.all(sc.indices[[1, 3]] == -1) and np.all(sc.values[[1, 3]] == 0)
    assert np.all(rsq[[1, 3]] == 0)
    assert np.all(sc.indices[[0, 2]] >= 0)


def test_exactly_representable_sample_stops_without_warning():
    rng = np.random.default_rng(8)
    D = unit_dictionary(rng, 12, 40)
    x = (2.0 * D[3] - 0.5 * D[7])[None, :]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sc = omp(x, D, 10, return_dense=False)
    dense = sc.to_dense()
    np.testing.assert_allclose(dense[0, [3, 7]], [2.0, -0.5], atol=1e-12)
    np.testing.assert_allclose(np.delete(dense[0], [3, 7]), 0, atol=1e-12)


def test_tol_stops_early():
    rng = np.random.default_rng(9)
    D = unit_dictionary(rng, 40, 60)
    X = rng.standard_normal((30, 60))
    tol = 0.8
    sc, rsq = omp(X, D, 25, tol=tol, return_dense=False, return_residual=True)
    used = (sc.indices >= 0).sum(axis=1)
    assert used.max() < 25
    rel = np.sqrt(rsq) / np.linalg.norm(X, axis=1)
    assert np.all(rel <= tol + 1e-12)
    for i in range(X.shape[0]):
        # the first support size at which the paper's OMP gets within tol
        a = X[i]
        for s in range(1, 26):
            ref, _ = paper_omp(a, D.T, s)
            if np.linalg.norm(a - D.T @ ref) <= tol * np.linalg.norm(a):
                break
        assert used[i] == s


def test_compact_and_dense_agree():
    rng = np.random.default_rng(10)
    D = unit_dictionary(rng, 15, 25)
    X = rng.standard_normal((9, 25))
    sc = omp(X, D, 4, return_dense=False)
    assert isinstance(sc, SparseCodes) and sc.n_atoms == 15
    np.testing.assert_array_equal(codes_to_dense(sc.indices, sc.values, 15), omp(X, D, 4))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 4), l=st.integers(1, 12), k=st.integers(1, 6), seed=st.integers(0, 99),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_codes_to_dense_scatters_each_row_as_a_loop_does(n, l, k, seed, dtype):
    # distinct atoms per row, -1 pads (value 0) anywhere: a row alone (its own path) and in a
    # batch give what a plain loop gives
    rng = np.random.default_rng(seed)
    idx = np.full((n, k), -1, np.int32)
    val = np.zeros((n, k), dtype)
    for r in range(n):
        used = rng.permutation(l)[:rng.integers(0, min(k, l) + 1)]
        slots = rng.permutation(k)[:len(used)]
        idx[r, slots] = used
        val[r, slots] = rng.standard_normal(len(used))
    ref = np.zeros((n, l), dtype)
    for r in range(n):
        for j, v in zip(idx[r], val[r]):
            if j >= 0:
                ref[r, j] = v
    for valid in (False, True):
        np.testing.assert_array_equal(codes_to_dense(idx, val, l, valid=valid), ref)
        for r in range(n):
            one = codes_to_dense(idx[r:r + 1], val[r:r + 1], l, valid=valid)
            assert one.shape == (1, l) and one.dtype == dtype and one.flags.c_contiguous
            np.testing.assert_array_equal(one, ref[r:r + 1])


def test_codes_to_dense_unvouched_indices_keep_their_meaning():
    # without valid=True any negative index is a pad and one past the atoms raises, one row
    # or many (the unmasked scatter is only for codes a backend wrote)
    val = np.array([[1.0, 2.0, 3.0]])
    for idx in (np.array([[0, -3, 4]]), np.array([[0, -3, 4], [1, -7, 2]])):
        d = codes_to_dense(idx, np.repeat(val, len(idx), 0), 5)
        np.testing.assert_array_equal(d[0], [1, 0, 0, 0, 3])
    with pytest.raises(IndexError):
        codes_to_dense(np.array([[0, 5, -1]]), val, 5)


def test_workspace_reuse_and_chunking():
    rng = np.random.default_rng(11)
    D = unit_dictionary(rng, 20, 30)
    G = D @ D.T
    X = rng.standard_normal((70, 30))
    be = NumpyBackend(block=8, batch=16)
    ws = be.prepare_omp(16, 30, 20, 5, np.float64)
    assert ws.batch <= 16 and ws.nbytes > 0
    a = be.omp_encode(X, D, G, 5, ws=ws)
    b = NumpyBackend(block=8, batch=256).omp_encode(X, D, G, 5)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.values, b.values)


def test_precomputed_gram_is_used():
    rng = np.random.default_rng(12)
    D = unit_dictionary(rng, 10, 20)
    X = rng.standard_normal((5, 20))
    np.testing.assert_array_equal(omp(X, D, 3, gram=D @ D.T), omp(X, D, 3))


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("X,D,k,kw,exc,match", [
    ([[np.nan, 1.0]], np.eye(2), 1, {}, ValueError, "NaN or Inf"),
    ([[np.inf, 1.0]], np.eye(2), 1, {}, ValueError, "NaN or Inf"),
    ([[1.0, 2.0]], [[np.nan, 0.0]], 1, {}, ValueError, "D contains"),
    ([1.0, 2.0], np.eye(2), 1, {}, ValueError, "2-D"),
    (np.ones((1, 2, 2)), np.eye(2), 1, {}, ValueError, "2-D"),
    (np.empty((0, 2)), np.eye(2), 1, {}, ValueError, "empty"),
    ([[1.0, 2.0]], np.eye(2), 0, {}, ValueError, "k must be in"),
    ([[1.0, 2.0]], np.eye(2), 2.5, {}, TypeError, "k must be an integer"),
    ([[1.0, 2.0]], np.eye(2), True, {}, TypeError, "k must be an integer"),
    ([[1.0, 2.0, 3.0]], np.eye(2), 1, {}, ValueError, "D has 2 features, expected 3"),
    ([["a", "b"]], np.eye(2), 1, {}, TypeError, "real numbers"),
    ([[1.0, 2.0]], np.eye(2), 1, {"tol": -0.1}, ValueError, "tol must be in"),
    ([[1.0, 2.0]], np.eye(2), 1, {"gram": np.eye(3)}, ValueError, "gram must have shape"),
    ([[1.0, 2.0]], np.eye(2), 1, {"dtype": np.int32}, TypeError, "float32 or float64"),
])
def test_bad_input_raises(X, D, k, kw, exc, match):
    with pytest.raises(exc, match=match):
        omp(X, D, k, **kw)


def test_finite_values_whose_sum_overflows_are_accepted():
    # check_array tests finiteness by a sum; an overflowing sum of finite values is not NaN
    from tinydl._validation import check_array
    big = np.full((3, 4), np.finfo(np.float32).max, np.float32)
    assert check_array(big, "X") is not None
    big[1, 2] = np.inf
    with pytest.raises(ValueError, match=r"1 NaN or Inf value\(s\); the first at index \(1, 2\)"):
        check_array(big, "X")
