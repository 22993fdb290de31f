"""The native backend's basis kernels (the streaming transform's joins) against their
specification, ``hal.backends.numpy.basis`` (``BasisWorkspace.append`` and ``wp_row``).

What is bit-identical and what agrees within a tolerance:

* ``project``: each ``out[j]`` is bit-identical whatever the number of rows, the row's
  position, the pointers' alignment and whether ``u`` is updated in the same pass; against
  float64 NumPy within 1e-5 (float32) / 1e-13 (float64) of ``|Q| @ |x|``;
* ``append`` with the next row gives that row's projections and ``(|x|^2, |Qx|^2)`` bit for bit
  as a separate ``wp_row`` call does (what keeps the transform's batch-split identity);
* the appended state (D, Q, L, G) agrees with the Python specification within 1e-5 / 1e-12,
  with or without the re-orthogonalization step.
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


def _spec_and_kernel(dtype, m, l):
    """A NumPy transform (the specification) and a native one, with their state arrays."""
    spec = StreamingDictionary(l=l, k=3, alpha=0.0, backend="numpy", dtype=dtype)
    kern = StreamingDictionary(l=l, k=3, alpha=0.0, backend="native", dtype=dtype)
    for sd in (spec, kern):  # fix the state's shape; a zero row never joins
        sd.partial_fit(np.zeros((1, m), dtype))
    assert type(kern._bws).__module__ != type(spec._bws).__module__
    return spec, kern


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [37, 2100])
def test_append_matches_the_python_specification(dtype, m):
    rng = np.random.default_rng(7)
    l = 12
    spec, kern = _spec_and_kernel(dtype, m, l)
    rows = rng.standard_normal((l, m)).astype(dtype)
    # row 5 nearly in the span of rows 0..4: the first step removes > half of it (re-orth)
    rows[5] = 0.99 * rows[:5].sum(0) / np.sqrt(5) + 0.05 * rows[5]
    reorths = []
    for i in range(l):
        a = np.ascontiguousarray(rows[i])
        proj_spec = proj_kern = None
        if i % 2 and i:  # half the atoms with proj given (as after a Wp test), half without
            proj_spec = spec._Q[:i] @ a
            proj_kern = np.ascontiguousarray(kern._Q[:i] @ a)
        norm_s = spec._bws.append(i, a, proj_spec)[0]
        spec.n_atoms_ = i + 1
        nxt = np.ascontiguousarray(rows[i + 1]) if i + 1 < l else None
        norm_k, reorth, xx, pp = kern._bws.append(i, a, proj_kern, nxt)
        kern.n_atoms_ = i + 1
        reorths.append(reorth)
        assert norm_k == pytest.approx(norm_s, rel=STATE_TOL[dtype])
        if nxt is not None:  # the fused next-row outputs are those of a separate call
            p_fused = kern._bws.p[:i + 1].copy()
            xx2, pp2 = kern._bws.wp_row(i + 1, nxt)
            np.testing.assert_array_equal(kern._bws.p[:i + 1], p_fused)
            assert (xx, pp) == (xx2, pp2)
    assert reorths[5] and not reorths[1]
    n = l
    for name in ("_D", "_Q", "_L", "_G"):
        got, ref = getattr(kern, name), getattr(spec, name)
        scale = max(1.0, float(np.abs(ref).max()))
        np.testing.assert_allclose(got[:n], ref[:n], rtol=0, atol=STATE_TOL[dtype] * scale * 10,
                                   err_msg=name)
    Q = kern._Q[:n].astype(np.float64)
    np.testing.assert_allclose(Q @ Q.T, np.eye(n), atol=50 * np.finfo(dtype).eps)
    D, L = kern._D[:n].astype(np.float64), kern._L[:n, :n].astype(np.float64)
    np.testing.assert_allclose(L @ Q, D, atol=50 * np.finfo(dtype).eps)
    np.testing.assert_allclose(kern._G[:n, :n], D @ D.T, atol=50 * np.finfo(dtype).eps)


def test_basis_workspace_checks_its_rows(native):
    D = np.zeros((4, 10))
    ws = native.prepare_basis(D, np.zeros((4, 10)), np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="C-contiguous float64 row of 10"):
        ws.wp_row(0, np.ones(10, np.float32))
    with pytest.raises(ValueError, match="atom 4 does not fit the 4 rows"):
        ws.append(4, np.ones(10))
    with pytest.raises(ValueError, match="proj should have 2 values"):
        ws.append(2, np.ones(10), np.ones(3))
    with pytest.raises(ValueError, match="prepare_basis: Q should be C-contiguous"):
        native.prepare_basis(D, np.zeros((10, 4)).T, np.zeros((4, 4)), np.zeros((4, 4)))
