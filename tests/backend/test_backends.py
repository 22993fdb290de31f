"""The shared backend suite: every backend against the NumPy specification.

Tolerances (also in each backend's docstring and its ``bit_identical`` / ``rtol``):

=============== ============================ ===================== =====================
backend         bit-identical ops            others, float32       others, float64
=============== ============================ ===================== =====================
numpy           all (the reference)          -                     -
multiprocessing omp_encode, gather_matmul    1e-5 * (|A| @ |B|)    1e-13 * (|A| @ |B|)
blas            none                         1e-5 * (|A| @ |B|)    1e-13 * (|A| @ |B|)
native          none                         1e-5 * (|A| @ |B|)    1e-13 * (|A| @ |B|)
opencl          none                         1e-5 * (|A| @ |B|)    1e-13 * (|A| @ |B|)
=============== ============================ ===================== =====================

(multiprocessing's plain products run numpy.matmul on row slices, and OpenBLAS picks kernels
by row count.)  OMP: indices identical for every backend (on data whose argmax is not a near
tie), values within ``OMP_RTOL`` of the largest coefficient (bit-identical ops: equal).
"""
import os
import signal
import warnings

import numpy as np
import pytest

import hal
from hal.backends.numpy import NumpyBackend

ALL = ("matmul", "correlate", "dense_forward", "gather_matmul", "scatter_matmul", "omp_encode")
# backend -> (ops bit-identical to numpy, rtol of the others per dtype)
TOLERANCES = {
    "numpy": (ALL, {"float32": 0.0, "float64": 0.0}),
    "multiprocessing": (("omp_encode", "gather_matmul"), {"float32": 1e-5, "float64": 1e-13}),
    "mpi": (("omp_encode", "gather_matmul"), {"float32": 1e-5, "float64": 1e-13}),
    "blas": ((), {"float32": 1e-5, "float64": 1e-13}),
    "native": ((), {"float32": 1e-5, "float64": 1e-13}),
    "opencl": ((), {"float32": 1e-5, "float64": 1e-13}),
}
OMP_RTOL = {"float32": 1e-4, "float64": 1e-10}
DTYPES = [np.float32, np.float64]
# (M, K, N): one row, one column, and sizes that are not multiples of blocks/tiles/vectors
SHAPES = [(1, 1, 1), (1, 7, 5), (3, 1, 9), (37, 53, 29), (65, 130, 17), (129, 64, 100)]


def _tol(backend, dtype, op):
    assert backend.name in TOLERANCES, \
        f"backend {backend.name!r} has no entry in TOLERANCES: state its tolerances there"
    exact_ops, rtol = TOLERANCES[backend.name]
    declared = ALL if backend.bit_identical else getattr(backend, "bit_identical_ops", ())
    assert set(declared) == set(exact_ops), "suite and backend disagree on bit-identity"
    exact = op in exact_ops
    if not exact:
        assert backend.rtol[np.dtype(dtype).name] <= rtol[np.dtype(dtype).name]
    return exact, rtol[np.dtype(dtype).name]


def _check(backend, got, ref, bound, dtype, op):
    exact, rtol = _tol(backend, dtype, op)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    if exact:
        np.testing.assert_array_equal(got, ref)
    else:
        tiny = np.finfo(dtype).tiny
        excess = np.abs(got.astype(np.float64) - ref) - (rtol * bound + tiny)
        assert excess.max(initial=-1) <= 0, \
            f"{backend.name}: error exceeds {rtol:g} * (|A| @ |B|) by {excess.max():.3g}"


def _layouts(a, b):
    """Contiguous, transposed (Fortran-order) and strided (non-contiguous) variants."""
    big_a = np.zeros((a.shape[0], 2 * a.shape[1]), a.dtype)
    big_a[:, ::2] = a
    big_b = np.zeros((2 * b.shape[0], b.shape[1] + 3), b.dtype)
    big_b[::2, :b.shape[1]] = b
    return {
        "contiguous": (a, b),
        "transposed": (np.asfortranarray(a), np.asfortranarray(b)),
        "strided": (big_a[:, ::2], big_b[::2, :b.shape[1]]),
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matmul(backend, dtype, shape):
    M, K, N = shape
    rng = np.random.default_rng(M * 1000 + K * 10 + N)
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    ref = np.matmul(a, b)
    bound = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    for name, (aa, bb) in _layouts(a, b).items():
        if "matmul" in TOLERANCES[backend.name][0]:
            ref = np.matmul(aa, bb)  # bit-identity is promised per layout, as numpy sees it
        _check(backend, backend.matmul(aa, bb), ref, bound, dtype, "matmul")
    out = np.full((N, M), np.nan, dtype).T  # a non-contiguous out
    res = backend.matmul(a, b, out=out)
    assert res is out
    # numpy itself rounds differently into a non-contiguous out: compare like with like
    ref_out = np.matmul(a, b, out=np.empty((N, M), dtype).T)
    ref = ref_out if "matmul" in TOLERANCES[backend.name][0] else np.matmul(a, b)
    _check(backend, out, ref, bound, dtype, "matmul")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_correlate(backend, dtype, shape, reference):
    n, m, l = shape
    rng = np.random.default_rng(7 + n + m + l)
    X = rng.standard_normal((n, m)).astype(dtype)
    D = rng.standard_normal((l, m)).astype(dtype)
    ref = reference.correlate(X, D)
    np.testing.assert_allclose(ref, X.astype(np.float64) @ D.T.astype(np.float64),
                               rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-4)
    bound = np.abs(X).astype(np.float64) @ np.abs(D).T.astype(np.float64)
    _check(backend, backend.correlate(X, D), ref, bound, dtype, "correlate")
    Xf = np.asfortranarray(X)
    ref_f = reference.correlate(Xf, D) if "correlate" in TOLERANCES[backend.name][0] else ref
    _check(backend, backend.correlate(Xf, D), ref_f, bound, dtype, "correlate")
    out = np.empty((n, l), dtype)
    assert backend.correlate(X, D, out=out) is out
    _check(backend, out, ref, bound, dtype, "correlate")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES[1:], ids=lambda s: "x".join(map(str, s)))
def test_dense_forward(backend, dtype, shape, reference):
    n, p, q = shape
    rng = np.random.default_rng(11 + n + p + q)
    X = rng.standard_normal((n, p)).astype(dtype)
    W = rng.standard_normal((p, q)).astype(dtype)
    b = rng.standard_normal(q).astype(dtype)
    bound = np.abs(X).astype(np.float64) @ np.abs(W).astype(np.float64) + np.abs(b)
    _check(backend, backend.dense_forward(X, W, b), reference.dense_forward(X, W, b), bound,
           dtype, "dense_forward")
    _check(backend, backend.dense_forward(X, W), reference.dense_forward(X, W), bound, dtype,
           "dense_forward")
    Wt = np.asfortranarray(W)
    out = np.empty((n, q), dtype)
    assert backend.dense_forward(X, Wt, b, out=out) is out
    _check(backend, out, reference.dense_forward(X, Wt, b), bound, dtype, "dense_forward")


def _compact_codes(rng, n, k, rows, dtype):
    """Random compact codes (a quarter padded with -1, repeats allowed) and the same codes
    as a dense float64 (n, rows) matrix, built by an independent per-entry loop; the padding's
    values are left random (they must contribute nothing)."""
    idx = rng.integers(0, rows, (n, k)).astype(np.int32)
    idx[rng.random((n, k)) < 0.25] = -1
    vals = rng.standard_normal((n, k)).astype(dtype)
    dense = np.zeros((n, rows))
    for i in range(n):
        for t in range(k):
            if idx[i, t] >= 0:
                dense[i, idx[i, t]] += vals[i, t]
    return idx, vals, dense


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k,rows,q", [(1, 1, 1, 1), (5, 3, 7, 9), (67, 4, 50, 33),
                                        (130, 6, 20, 100)])
def test_gather_matmul(backend, dtype, n, k, rows, q, reference):
    rng = np.random.default_rng(n + k + rows + q)
    idx, vals, dense = _compact_codes(rng, n, k, rows, dtype)
    vals[idx < 0] = 0
    W = rng.standard_normal((rows, q)).astype(dtype)
    indep = dense @ W.astype(np.float64)  # an independent reference: dense codes @ W
    ref = reference.gather_matmul(idx, vals, W)
    bound = np.abs(dense) @ np.abs(W).astype(np.float64)
    np.testing.assert_array_less(np.abs(ref - indep), 1e-5 * bound + 1e-30)
    _check(backend, backend.gather_matmul(idx, vals, W), ref, bound, dtype, "gather_matmul")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("beta", [0.0, 1.0, 0.9])
@pytest.mark.parametrize("n,k,rows,q", [(1, 1, 1, 1), (5, 3, 7, 9), (67, 4, 50, 33),
                                        (130, 6, 20, 100)])
def test_scatter_matmul(backend, dtype, n, k, rows, q, beta, reference):
    """The transposed k-sparse product (the first layer's weight gradient from codes)."""
    if not hasattr(type(backend), "scatter_matmul") or \
            type(backend).scatter_matmul is hal.Backend.scatter_matmul:
        pytest.skip(f"backend {backend.name!r} has no scatter_matmul (the trainer scatters)")
    rng = np.random.default_rng(n * k + rows + q)
    idx, vals, dense = _compact_codes(rng, n, k, rows, dtype)
    dy = rng.standard_normal((n, q)).astype(dtype)
    start = rng.standard_normal((rows, q)).astype(dtype)
    indep = beta * start.astype(np.float64) + dense.T @ dy.astype(np.float64)
    ref = reference.scatter_matmul(idx, vals, dy, start.copy(), beta=beta)
    bound = np.abs(dense.T) @ np.abs(dy).astype(np.float64) + np.abs(start)
    np.testing.assert_array_less(np.abs(ref - indep), 1e-5 * bound + 1e-30)
    out = start.copy()
    got = backend.scatter_matmul(idx, vals, dy, out, beta=beta)
    assert got is out
    _check(backend, got, ref, bound, dtype, "scatter_matmul")
    bad = idx.copy()
    bad[0, 0] = rows  # out of range: refused, not written past the end
    with pytest.raises(IndexError, match="code indices must lie in"):
        backend.scatter_matmul(bad, vals, dy, start.copy())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k,rows,q", [(1, 1, 1, 1), (32, 20, 100, 64), (7, 5, 9, 33)])
def test_sparse_layer_plan(backend, dtype, n, k, rows, q):
    """prepare_sparse_layer: a dense layer fed codes, forward and backward, against float64
    products of the dense codes; the workspace and gradients given are the ones written."""
    rng = np.random.default_rng(n + k + rows + q)
    idx, vals, dense = _compact_codes(rng, n, k, rows, dtype)
    W = rng.standard_normal((rows, q)).astype(dtype)
    b = rng.standard_normal(q).astype(dtype)
    y, gW, gb = np.empty((n + 3, q), dtype), np.full((rows, q), np.nan, dtype), \
        np.full(q, np.nan, dtype)
    plan = backend.prepare_sparse_layer(W, b, y, gW, gb)
    got = plan.forward(idx, vals)
    assert got.shape == (n, q) and np.shares_memory(got, y)
    ref = dense @ W.astype(np.float64) + b
    bound = np.abs(dense) @ np.abs(W).astype(np.float64) + np.abs(b)
    _, rtol = _tol(backend, dtype, "gather_matmul")
    assert np.all(np.abs(got - ref) <= max(rtol, 1e-6 if dtype == np.float32 else 1e-14)
                  * 4 * bound + 1e-30)
    dy = rng.standard_normal((n, q)).astype(dtype)
    plan.backward(idx, vals, dy)
    ref_w = dense.T @ dy.astype(np.float64)
    bound_w = np.abs(dense.T) @ np.abs(dy).astype(np.float64)
    tol = max(rtol, 1e-6 if dtype == np.float32 else 1e-14) * 4
    assert np.all(np.abs(gW - ref_w) <= tol * bound_w + 1e-30)
    assert np.all(np.abs(gb - dy.astype(np.float64).sum(0))
                  <= tol * np.abs(dy).astype(np.float64).sum(0) + 1e-30)
    bad = idx.copy()
    bad[-1, 0] = rows
    with pytest.raises(IndexError, match=rf"code indices must lie in \[-1, {rows}\)"):
        plan.forward(bad, vals)
    with pytest.raises(IndexError, match=rf"code indices must lie in \[-1, {rows}\)"):
        backend.gather_matmul(bad, vals, W)


def _sparse_data(n, m, l, k, dtype, seed):
    """Samples that are k-sparse combinations of unit-norm random atoms (well separated)."""
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((l, m))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    codes = np.zeros((n, l))
    for i in range(n):
        codes[i, rng.choice(l, k, replace=False)] = rng.uniform(1, 2, k) * \
            rng.choice([-1, 1], k)
    X = codes @ D
    D = D.astype(dtype)
    return X.astype(dtype), D, (D @ D.T).astype(dtype), codes


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 70, 200])
def test_omp_encode(backend, dtype, n, reference):
    m, l, k = 96, 80, 5
    X, D, G, codes = _sparse_data(n, m, l, k, dtype, seed=n)
    ref = reference.omp_encode(X, D, G, k)
    # the reference itself recovers the true supports on this data
    for i in range(n):
        assert set(ref.indices[i]) == set(np.flatnonzero(codes[i]))
    got = backend.omp_encode(X, D, G, k)
    np.testing.assert_array_equal(got.indices, ref.indices)
    np.testing.assert_array_equal(got.n_nonzero, ref.n_nonzero)
    exact, _ = _tol(backend, dtype, "omp_encode")
    if exact:
        np.testing.assert_array_equal(got.values, ref.values)
        np.testing.assert_array_equal(got.residual_sq, ref.residual_sq)
    else:
        scale = np.abs(ref.values).max()
        np.testing.assert_allclose(got.values, ref.values, rtol=0,
                                   atol=OMP_RTOL[np.dtype(dtype).name] * scale)
    # non-contiguous input and a tolerance stop give the same codes as the reference
    Xs = np.asfortranarray(X)
    got2 = backend.omp_encode(Xs, D, G, k, tol=0.5)
    ref2 = reference.omp_encode(X, D, G, k, tol=0.5)
    np.testing.assert_array_equal(got2.indices, ref2.indices)
    assert (ref2.n_nonzero < k).any() or n == 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 70, 300])
@pytest.mark.parametrize("case", ["sparse", "k_above_rank"])
def test_omp_workspace_scratch_is_dead_between_calls(backend, dtype, n, case):
    """What a workspace names as scratch (OMPWorkspace.scratch: the learner lends it to its
    network between calls) is written before it is read on every call: the same codes,
    bit for bit, after filling it with NaN; a lone row, chunks smaller than the workspace
    and more than one chunk, tolerance stops, and stops at the rank of the atoms (k > m)."""
    m, l, k = (96, 80, 5) if case == "sparse" else (12, 40, 16)
    X, D, G, _ = _sparse_data(n, m, l, min(k, m // 2), dtype, seed=n)
    ws = backend.prepare_omp(256, m, l, k, dtype)
    for tol in (None, 0.5):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (k > m: the stops at the rank are warned of)
            first = backend.omp_encode(X, D, G, k, tol=tol, ws=ws)
            for a in ws.scratch():
                assert a.dtype.kind == "f" and a.flags.c_contiguous
                a[...] = np.nan
            again = backend.omp_encode(X, D, G, k, tol=tol, ws=ws)
        for name in ("indices", "values", "n_nonzero", "residual_sq"):
            np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    if backend.name in ("numpy", "blas"):  # Batch-OMP's own workspace lends its scratch
        assert sum(a.nbytes for a in ws.scratch()) > 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["k_above_rank", "rank_deficient"])
def test_omp_stops_at_the_rank_and_warns_once(backend, reference, dtype, case):
    """Issue 17: k above the rank (35 atoms in R^25, exactly 5-sparse signals, k = 35) and a
    rank-deficient dictionary: every backend stops each sample at the rank of its chosen
    atoms, as the NumPy specification does, with one warning naming how many stopped."""
    import warnings

    from hal.backends.numpy import LinearDependenceWarning
    n = 300                        # enough rows for multiprocessing to shard
    if case == "k_above_rank":
        X, D, G, _ = _sparse_data(n, 25, 35, 5, dtype, seed=17)
        k, count = 35, n
    else:
        rng = np.random.default_rng(17)
        base = rng.standard_normal((6, 20))
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        mix = base[0] + base[1]
        D = np.vstack([base, mix / np.linalg.norm(mix), base[2]]).astype(dtype)
        G = D @ D.T
        X = rng.standard_normal((n, 20)).astype(dtype)
        k, count = 8, n
    results = []
    for be in (reference, backend):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results.append(be.omp_encode(X, D, G, k))
        ours = [w for w in caught if issubclass(w.category, LinearDependenceWarning)]
        assert len(ours) == 1, [str(w.message) for w in caught]
        assert f"stopped early for {count} of {n} samples" in str(ours[0].message)
    ref, got = results
    np.testing.assert_array_equal(got.n_nonzero, ref.n_nonzero)
    assert ref.n_nonzero.max() <= (25 if case == "k_above_rank" else 6)
    scale = np.abs(ref.values).max()
    assert scale < 10          # no coefficient fitted to rounding noise
    rtol = OMP_RTOL[np.dtype(dtype).name]
    if case == "k_above_rank":
        np.testing.assert_array_equal(got.indices, ref.indices)
        np.testing.assert_allclose(got.values, ref.values, rtol=0, atol=rtol * scale)
    else:
        # the atom mixing atoms 0 and 1 makes their correlations exact ties once it is
        # chosen: backends may take either; the fit (the projection on the span) is the same
        np.testing.assert_allclose(got.to_dense() @ D, ref.to_dense() @ D, rtol=0,
                                   atol=100 * rtol * scale)


# -- backend-specific checks ---------------------------------------------------------------
def test_null_counts_and_shapes():
    be = hal.get_backend("null")
    a = np.ones((5, 7), np.float32)
    b = np.ones((7, 3), np.float32)
    out = be.matmul(a, b)
    assert out.shape == (5, 3) and out.dtype == np.float32 and not out.any()
    be.matmul(a, b)
    assert be.counts["matmul"] == {"calls": 2, "flops": 2 * 2 * 5 * 7 * 3,
                                   "bytes": 2 * (a.nbytes + b.nbytes + 5 * 3 * 4)}
    X = np.ones((4, 6))
    D = np.ones((9, 6))
    r = be.omp_encode(X, D, D @ D.T, 3)
    assert r.indices.shape == (4, 3) and (r.indices == -1).all() and r.values.dtype == X.dtype
    from hal.backends.null import omp_flops
    assert be.counts["omp_encode"]["flops"] == omp_flops(4, 6, 9, 3)
    # the count is dominated by the correlation, as in the real Batch-OMP
    assert omp_flops(1, 5625, 100, 20) > 2 * 5625 * 100
    assert omp_flops(1, 5625, 100, 20) < 1.1 * 2 * 5625 * 100
    y = be.dense_forward(np.ones((2, 6)), np.ones((6, 4)), np.ones(4))
    assert y.shape == (2, 4)
    assert be.counts["dense_forward"]["flops"] == 2 * 2 * 6 * 4 + 2 * 4
    g = be.gather_matmul(np.zeros((2, 3), np.int32), np.ones((2, 3)), np.ones((5, 4)))
    assert g.shape == (2, 4) and be.counts["gather_matmul"]["flops"] == 2 * 2 * 3 * 4
    assert be.total_flops == sum(c["flops"] for c in be.counts.values())
    be.reset()
    assert be.total_flops == 0


def test_multiprocessing_dead_worker_raises_and_recovers():
    if hal.available_backends()["multiprocessing"][0] is False:
        pytest.skip("multiprocessing backend cannot run here")
    with hal.get_backend("multiprocessing", workers=2, min_rows=1, timeout=30.0) as be:
        a = np.random.default_rng(0).standard_normal((130, 20))
        np.testing.assert_allclose(be.matmul(a, a.T), NumpyBackend().matmul(a, a.T),
                                   rtol=1e-12)
        victim = be.pids[1]
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(hal.BackendError, match=f"pid {victim}"):
            be.matmul(a, a.T)
        # the next call starts a fresh pool
        np.testing.assert_allclose(be.matmul(a, a.T), NumpyBackend().matmul(a, a.T),
                                   rtol=1e-12)
        assert victim not in be.pids
    assert be.pids == []


def test_multiprocessing_shards_on_block_boundaries():
    from hal.backends.multiprocessing import MultiprocessingBackend
    be = MultiprocessingBackend(workers=3, block=16)
    shards = be._shards(100)
    assert shards[0][0] == 0 and shards[-1][1] == 100
    assert all(s % 16 == 0 for s, _ in shards)
    assert all(e == s2 for (_, e), (s2, _) in zip(shards, shards[1:]))


def test_blas_threads_roundtrip():
    from hal import threads
    info = threads.blas_info()
    if not info["numpy"]["controlled"]:
        pytest.skip(f"numpy's BLAS threads cannot be controlled: {info['numpy']['reason']}")
    before = threads.get_num_threads()
    with threads.blas_threads(2):
        assert threads.get_num_threads() == 2
    assert threads.get_num_threads() == before
    with pytest.raises(ValueError, match="got 0"):
        threads.set_num_threads(0)


def test_opencl_named_device_missing():
    pytest.importorskip("pyopencl", reason="pyopencl is not installed")
    from hal.backends.opencl import select_device
    with pytest.raises(hal.BackendUnavailable, match="no OpenCL device matches"):
        select_device("no-such-device-xyz")


def test_blas_backend_library_threads_follow_the_setting(monkeypatch, require_backend):
    # the blas backend's own OpenBLAS takes the count hal.threads was given, also when that
    # was set before the library loaded; with nothing set and no OPENBLAS_NUM_THREADS it runs
    # one thread (its default of one per core spun 60x slower on a shared 2-core machine)
    require_backend("blas")
    hal.get_backend("blas")  # loads the library
    import hal.backends.blas as blas_mod
    from hal import threads
    monkeypatch.setattr(threads, "_REQUESTED", None)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    assert threads.default_backend_threads() == 1
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    assert threads.default_backend_threads() is None
    entry = threads._blas_backend_lib()
    lib, getter = entry[0], entry[3][0]
    if lib is None:
        pytest.skip(f"the blas library's threads cannot be controlled: {entry[2]}")
    before = int(getattr(lib, getter)())
    try:
        with threads.blas_threads(2):
            assert int(getattr(lib, getter)()) == 2
            assert threads.default_backend_threads() == 2
            blas_mod._set_library_threads(threads.default_backend_threads())
            assert int(getattr(lib, getter)()) == 2
        blas_mod._set_library_threads(1)
        assert int(getattr(lib, getter)()) == 1
    finally:
        blas_mod._set_library_threads(before)
