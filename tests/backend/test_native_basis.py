"""The native backend's streaming-transform kernels against their specification,
``hal.backends.numpy.basis`` (``BasisWorkspace.run``), and their fixed orders.

What is bit-identical and what agrees within a tolerance:

* ``project`` (the explicit residual of the Wp test): each ``out[j]`` is bit-identical
  whatever the number of rows, the row's position, the pointers' alignment and whether ``u``
  is updated in the same pass; against float64 NumPy within 1e-5 (float32) / 1e-13 (float64)
  of ``|Q| @ |x|``;
* ``correlate``: each value bit-identical alone, in any batch, with any number of atoms;
* ``stream`` (Algorithm 2 in one call): the same joins as NumPy's, the state (D, G, Li) and
  the codes within the tolerance.
"""
import numpy as np
import pytest

import hal
from tinydl.transform import StreamingDictionary

RTOL = {np.float32: 1e-5, np.float64: 1e-13}
STATE_TOL = {np.float32: 1e-5, np.float64: 1e-12}
# row lengths: shorter than one vector step, not a multiple of it, across a column chunk
LENGTHS = [3, 37, 300, 2100, 4133]


@pytest.fixture(scope="module", autouse=True)
def native(require_backend):
    require_backend("native")
    return hal.get_backend("native")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", LENGTHS)
def test_project_agrees_and_each_dot_is_stable(native, dtype, m):
    rng = np.random.default_rng(m)
    n = 70  # more than one group of 64 rows, odd pairs included below
    Q = rng.standard_normal((n, m)).astype(dtype)
    x = rng.standard_normal(m).astype(dtype)
    p = np.empty(n, dtype)
    native.project(Q, x, p)
    ref = Q.astype(np.float64) @ x.astype(np.float64)
    bound = np.abs(Q.astype(np.float64)) @ np.abs(x.astype(np.float64))
    assert np.all(np.abs(p - ref) <= RTOL[dtype] * bound)
    # fused with a Gram-Schmidt update: the same projections, bit for bit
    h = rng.standard_normal(n).astype(dtype)
    u0 = rng.standard_normal(m).astype(dtype)
    u, p2 = u0.copy(), np.empty(n, dtype)
    native.project(Q, x, p2, h=h, u=u)
    np.testing.assert_array_equal(p2, p)
    u_ref = u0.astype(np.float64) - h.astype(np.float64) @ Q.astype(np.float64)
    u_bound = np.abs(u0) + np.abs(h.astype(np.float64)) @ np.abs(Q.astype(np.float64))
    assert np.all(np.abs(u - u_ref) <= 4 * RTOL[dtype] * u_bound)
    # the update alone gives the same u
    u3 = u0.copy()
    native.project(Q, None, None, h=h, u=u3)
    np.testing.assert_array_equal(u3, u)
    # any row subset, at any alignment of x: the same bits
    for lo, hi in [(0, 1), (5, 6), (3, 10), (1, 64), (63, 70), (0, n)]:
        buf = np.empty(m + 3, dtype)[3:]
        buf[:] = x
        sub = np.empty(hi - lo, dtype)
        native.project(np.ascontiguousarray(Q[lo:hi]), buf, sub)
        np.testing.assert_array_equal(sub, p[lo:hi])


def test_project_refuses_what_it_cannot_do_exactly(native):
    Q = np.ones((3, 8), np.float32)
    with pytest.raises(ValueError, match="C-contiguous"):
        native.project(Q, np.ones(16, np.float32)[::2], np.empty(3, np.float32))
    with pytest.raises(ValueError, match="one dtype"):
        native.project(Q, np.ones(8), np.empty(3, np.float32))
    with pytest.raises(ValueError, match=r"got Q \(3, 8\)"):
        native.project(Q, np.ones(7, np.float32), np.empty(3, np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [3, 37, 2100])
@pytest.mark.parametrize("l", [37, 200])
def test_correlate_each_value_in_a_fixed_order(native, dtype, m, l):
    """Each correlation is the same bits alone, in any batch, at any position, with any
    number of atoms after it; and agrees with float64 NumPy within the tolerance.  (l=200:
    a lone row's atoms take more than one register block, its path of its own.)"""
    rng = np.random.default_rng(m)
    n = 50
    X = rng.standard_normal((n, m)).astype(dtype)
    D = rng.standard_normal((l, m)).astype(dtype)
    ws = native.prepare_omp(64, m, l, 3, dtype)
    ws.arrays["DTp"][:, :l] = D.T
    c, xx = (a.copy() for a in native._chunk_correlations(X, D.T, ws.arrays))
    ref = X.astype(np.float64) @ D.T.astype(np.float64)
    assert np.all(np.abs(c - ref) <= RTOL[dtype] * (np.abs(X) @ np.abs(D.T)).astype(np.float64))
    np.testing.assert_allclose(xx, (X.astype(np.float64) ** 2).sum(1), rtol=RTOL[dtype])
    for lo, hi in [(0, 1), (7, 8), (3, 10), (5, 50)]:
        c1, x1 = native._chunk_correlations(np.ascontiguousarray(X[lo:hi]), D.T, ws.arrays)
        np.testing.assert_array_equal(c1, c[lo:hi])
        np.testing.assert_array_equal(x1, xx[lo:hi])
    # fewer atoms (a dictionary still filling): each value unchanged
    few = native.prepare_omp(64, m, 9, 3, dtype)
    few.arrays["DTp"][:, :9] = D[:9].T
    c9, _ = native._chunk_correlations(X, D[:9].T, few.arrays)
    np.testing.assert_array_equal(c9, c[:, :9])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("alpha", [0.05, 0.3])
def test_stream_kernel_matches_the_python_specification(dtype, alpha):
    """The native Algorithm 2 (one C call per batch) against NumPy's: the same joins, the
    state (D, G, Li) and codes within the tolerance, G = D D^T and Li the inverse Cholesky
    factor of G."""
    rng = np.random.default_rng(3)
    m, rank, l = 60, 12, 20
    X = (rng.standard_normal((200, rank)) @ rng.standard_normal((rank, m))
         + 0.2 * rng.standard_normal((200, m))).astype(dtype)
    spec = StreamingDictionary(l=l, k=4, alpha=alpha, backend="numpy", dtype=dtype)
    kern = StreamingDictionary(l=l, k=4, alpha=alpha, backend="native", dtype=dtype)
    cs, ck = spec.fit_transform(X), kern.fit_transform(X)
    assert type(kern._bws).__module__ != type(spec._bws).__module__
    assert spec.n_atoms_ == kern.n_atoms_ > 5
    tol = STATE_TOL[dtype] * 100
    n = kern.n_atoms_
    for name in ("_D", "_G", "_Li"):
        got, ref = getattr(kern, name)[:n, :n if name != "_D" else None], \
            getattr(spec, name)[:n, :n if name != "_D" else None]
        np.testing.assert_allclose(got, ref, rtol=0, atol=tol * max(1, np.abs(ref).max()),
                                   err_msg=name)
    D, G, Li = (kern._D[:n].astype(np.float64), kern._G[:n, :n].astype(np.float64),
                kern._Li[:n, :n].astype(np.float64))
    np.testing.assert_allclose(G, D @ D.T, atol=50 * np.finfo(dtype).eps)
    np.testing.assert_allclose(Li @ G @ Li.T, np.eye(n), atol=1e3 * np.finfo(dtype).eps)
    np.testing.assert_allclose(ck, cs, atol=tol * 100 * np.abs(cs).max())
    # the projection error (explicit residual everywhere) against the explicit inverse
    P = D.T @ np.linalg.solve(G, D @ X[:20].T.astype(np.float64))
    ref = np.linalg.norm(P - X[:20].T, axis=0) / np.linalg.norm(X[:20], axis=1)
    np.testing.assert_allclose(kern.projection_error(X[:20]), ref, atol=1e3 * np.finfo(dtype).eps)


def test_basis_workspace_checks_its_arrays(native):
    D = np.zeros((4, 10))
    with pytest.raises(ValueError, match="prepare_basis: G should be C-contiguous"):
        native.prepare_basis(D, np.zeros((4, 4)).T[:, :3], np.zeros((4, 4)))
    with pytest.raises(ValueError, match="prepare_basis: Li should be C-contiguous"):
        native.prepare_basis(D, np.zeros((4, 4)), np.zeros((4, 4), np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int8])
@pytest.mark.parametrize("shape", [(0, 8), (1, 8), (3, 5), (5626, 104), (617, 200)])
def test_aligned_zeros_start_on_a_cache_line(dtype, shape):
    from hal.backends.native.bound import aligned_zeros
    a = aligned_zeros(shape, dtype)
    assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
    assert a.flags.writeable and not a.any()
    assert a.size == 0 or a.ctypes.data % 64 == 0
    a[...] = 1  # its own memory: nothing else sees the write
    assert a.sum() == a.size


def test_the_transposed_atoms_the_kernels_read_start_on_a_cache_line(native):
    # NumPy's allocator puts a large array 16 bytes past a page: the kernels' copies of D.T
    # are placed on a line themselves (bound.aligned_zeros), so a vector load of a row does
    # not straddle two lines
    rng = np.random.default_rng(0)
    D = rng.standard_normal((100, 5625)).astype(np.float32)
    G = D @ D.T
    assert native.prepare_basis(D, G, np.zeros_like(G)).DT.ctypes.data % 64 == 0
    assert native.prepare_encode(D, G, 5).DT.ctypes.data % 64 == 0
    assert native.transposed_atoms(100, 5625, np.float32).ctypes.data % 64 == 0
    for Dq, scale in ((D.astype(np.float16), None),
                      (np.ones(D.shape, np.int8), np.ones(100, np.float32))):
        ws = native.prepare_stored_basis(Dq, scale, G, np.zeros_like(G))
        assert ws._tiles.DqT.ctypes.data % 64 == 0
