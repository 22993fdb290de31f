"""The native backend's stored-dictionary kernels (``hal/backends/native/stored.c``) against
their specification, the NumPy reference ``hal.backends.numpy.stored`` (decoded float32 tiles
multiplied by NumPy), and their fixed order.

What is bit-identical and what agrees within a tolerance:

* ``correlate`` (``X @ decode(D).T``): within ``1e-5 * (|X| @ |decode(D)|.T)`` of a float64
  product of the decoded atoms (another summation order; the int8 scale applied once to the
  finished sum); each value bit-identical alone, in any batch, with any number of atoms after
  it (a lone row decodes in registers, a batch from a decoded tile: the same sums), and the
  same bits as float32's own kernel on the decoded atoms (one kernel, correlate.c);
* ``combine`` (``out -= W @ decode(D)``): within ``1e-5 * (|out| + |W| @ |decode(D)|)``;
* the one-call encode: the codes of the NumPy reference's plan (same supports, values within
  1e-4 of the largest);
* a StreamingDictionary on the native backend with a float16 / int8 dictionary: the same joins
  as on NumPy, the same bits however the stream is cut; atoms that join after the kernels
  were bound reach their transposed copy (the same codes as a dictionary loaded afresh).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hal
from hal.backends.numpy.stored import StoredBasisWorkspace as Reference
from hal.backends.numpy.stored import decode, quantize
from tinydl.transform import StreamingDictionary

STORAGE = ["float16", "int8"]
RTOL = 1e-5
# row lengths: shorter than one vector step, not a multiple of 8, across decoded chunks
LENGTHS = [1, 7, 9, 520, 2100]


@pytest.fixture(scope="module")
def native(require_backend):
    require_backend("native")
    return hal.get_backend("native")


def _atoms(rng, l, m, storage):
    D = rng.standard_normal((l, m)).astype(np.float32)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    q, sc = quantize(D, storage)
    return q, sc, decode(q, sc, np.float32)


def _f32_correlate(native, X, D):
    """``X @ D.T`` by correlate.c's float32 kernel (correlate_f32), atoms transposed and
    padded as it reads them."""
    ffi, lib = native._nffi, native._nlib
    n, (l, m) = len(X), D.shape
    DT = np.zeros((m, int(lib.correlate_width_f32(l))), np.float32)
    DT[:, :l] = D.T
    C = np.empty((n, l), np.float32)
    acc = np.empty(int(lib.correlate_scratch_f32(l)), np.float32)
    X = np.ascontiguousarray(X, np.float32)
    fb = ffi.from_buffer
    lib.correlate_f32(n, l, m, fb("float[]", X), m, fb("float[]", DT), DT.shape[1],
                      fb("float[]", C), l, ffi.NULL, fb("float[]", acc))
    return C


def _tiles(native, q, sc):
    from hal.backends.native.stored import StoredTiles
    return StoredTiles(native._nffi, native._nlib, q, sc)


@pytest.mark.parametrize("storage", STORAGE)
@pytest.mark.parametrize("m,l", [(m, 37) for m in LENGTHS] + [(300, 130)])
def test_correlate_agrees_and_each_value_is_stable(native, storage, m, l):
    # l = 130: 17 vectors of atoms, which a lone row takes in two register blocks over
    # chunks of features (correlate.c's correlate1), a batch in blocks of 2 (the tile)
    rng = np.random.default_rng(m)
    q, sc, Dd = _atoms(rng, l, m, storage)
    t = _tiles(native, q, sc)
    X = rng.standard_normal((53, m)).astype(np.float32)  # more than one 48-row group
    C = np.full((53, l), np.nan, np.float32)
    t.correlate(X, l, C)
    ref = X.astype(np.float64) @ Dd.T.astype(np.float64)
    bound = np.abs(X).astype(np.float64) @ np.abs(Dd).T.astype(np.float64)
    assert np.all(np.abs(C - ref) <= RTOL * bound + 1e-30)
    for i in (0, 1, 47, 48, 52):  # alone, and with fewer atoms: the same bits
        one = np.empty((1, l), np.float32)
        t.correlate(X[i:i + 1], l, one)
        np.testing.assert_array_equal(one[0], C[i])
        few = np.empty((1, 5), np.float32)
        t.correlate(X[i:i + 1], 5, few)
        np.testing.assert_array_equal(few[0], C[i, :5])
    part = np.empty((6, l), np.float32)
    t.correlate(X[3:9], l, part)
    np.testing.assert_array_equal(part, C[3:9])
    # float32's own kernel over the decoded atoms (the int8 scale on the finished sum)
    want = _f32_correlate(native, X, decode(q, None, np.float32))
    np.testing.assert_array_equal(C, want if sc is None else want * sc)


@settings(max_examples=25, deadline=None)
@given(storage=st.sampled_from(STORAGE), n=st.integers(1, 60), l=st.integers(1, 30),
       m=st.integers(1, 300), seed=st.integers(0, 2 ** 31 - 1), split=st.integers(0, 60))
def test_correlate_property_any_split_same_bits(native, storage, n, l, m, seed, split):
    rng = np.random.default_rng(seed)
    q, sc, Dd = _atoms(rng, l, m, storage)
    t = _tiles(native, q, sc)
    X = (rng.standard_normal((n, m)) * rng.uniform(0.1, 10)).astype(np.float32)
    C = np.empty((n, l), np.float32)
    t.correlate(X, l, C)
    bound = np.abs(X).astype(np.float64) @ np.abs(Dd).T.astype(np.float64)
    ref = X.astype(np.float64) @ Dd.T.astype(np.float64)
    assert np.all(np.abs(C - ref) <= RTOL * bound + 1e-30)
    s = min(split, n)
    A = np.empty((s, l), np.float32)
    B = np.empty((n - s, l), np.float32)
    t.correlate(X[:s], l, A)
    t.correlate(X[s:], l, B)
    np.testing.assert_array_equal(np.concatenate([A, B]), C)


def _edge_atoms(rng, storage, l, m):
    """Stored atoms whose values include every edge of the lone row's integer decoding
    (correlate.c's tdl_load_f16_scaled, tdl_load_i8_int), in every lane of every vector."""
    if storage == "float16":
        edges = np.array([0.0, -0.0, 2.0 ** -24, -2.0 ** -24, 2.0 ** -14 - 2.0 ** -24,
                          -(2.0 ** -14 - 2.0 ** -24), 2.0 ** -14, 65504.0, -65504.0, 1.0,
                          -1.0, 3.0e-6, -0.33325], np.float16)
        q = rng.choice(edges, (l, m))
        q[:, ::3] = rng.standard_normal((l, len(range(0, m, 3)))).astype(np.float16)
        return q, None
    q = rng.integers(-128, 128, (l, m)).astype(np.int8)
    q[:, 0], q[:, 1], q[:, 2] = -128, 127, 0  # the ends of the range, in every atom's lane
    return q, rng.uniform(0.25, 4.0, l).astype(np.float32)


@pytest.mark.parametrize("storage", STORAGE)
def test_lone_row_integer_decoding_has_the_conversions_bits(native, storage):
    # A lone row decodes 4 of each 14 vectors of atoms by integer ops and the rest by the
    # conversion instructions; a batch decodes every value by conversion into a float tile.
    # The bits must agree: edge halves (zeros, subnormals, the largest) and bytes (-128, 127)
    # in every lane; features at the float16 path's limit (|x| < 2^16 by integer ops,
    # 2^16 and beyond by conversion), float subnormals, -0; l = 112 and 104 (14 and 13
    # vectors) and l = 130 (two register blocks of 9 and 8).
    rng = np.random.default_rng(11)
    m = 75
    for l in (112, 104, 130):
        q, sc = _edge_atoms(rng, storage, l, m)
        t = _tiles(native, q, sc)
        X = rng.standard_normal((6, m)).astype(np.float32)
        X[0, :8] = [np.nextafter(np.float32(65536), np.float32(0)), 65536.0, -65536.0,
                    1.0e5, -np.nextafter(np.float32(65536), np.float32(0)), 1e-40, -0.0, 0.0]
        X[1] = rng.uniform(-7e4, 7e4, m).astype(np.float32)   # both sides of 2^16
        X[2] = np.float32(1e-41) * rng.standard_normal(m).astype(np.float32)  # subnormal x
        X[3] = 0.0
        whole = np.empty((len(X), l), np.float32)
        t.correlate(X, l, whole)  # a batch: the tile, every value by conversion
        Dd = decode(q, sc, np.float64)
        ref = X.astype(np.float64) @ Dd.T
        bound = np.abs(X).astype(np.float64) @ np.abs(Dd).T
        assert np.all(np.abs(whole - ref) <= RTOL * bound + 1e-30)
        for i in range(len(X)):
            one = np.empty((1, l), np.float32)
            t.correlate(X[i:i + 1], l, one)
            np.testing.assert_array_equal(one[0].view(np.uint32), whole[i].view(np.uint32),
                                          err_msg=f"{storage} l={l} row {i}")


def test_lone_float16_row_with_subnormals_flushed_takes_the_conversion(native):
    # With MXCSR's DAZ set (PyTorch's set_flush_denormal(True) sets it), a float subnormal
    # input reads as zero: the integer decoding's image of a subnormal half (a float
    # subnormal, 2^-112 times the half) would be lost, so a lone row must take the
    # conversion alone and keep the batch's bits (the tile holds the halves as normal floats).
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    l, m = 112, 40
    q = np.full((l, m), np.float16(2.0 ** -14 - 2.0 ** -24))  # subnormal halves, every lane
    q[:, ::2] = rng.standard_normal((l, m // 2)).astype(np.float16)
    t = _tiles(native, q, None)
    X = rng.uniform(0.5, 2.0, (3, m)).astype(np.float32)
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU has no flush-to-zero / denormals-are-zero control")
    try:
        whole = np.empty((3, l), np.float32)
        t.correlate(X, l, whole)
        one = np.empty((1, l), np.float32)
        t.correlate(X[1:2], l, one)
    finally:
        torch.set_flush_denormal(False)
    np.testing.assert_array_equal(one[0].view(np.uint32), whole[1].view(np.uint32))
    # and the subnormal halves counted (decoded, they are normal floats): the product over
    # atoms without them differs
    q0 = q.copy()
    q0[:, 1::2] = 0
    without = np.empty((1, l), np.float32)
    _tiles(native, q0, None).correlate(X[1:2], l, without)
    assert np.all(one != without)


@pytest.mark.parametrize("storage", STORAGE)
@pytest.mark.parametrize("m", [9, 2100])
def test_combine_agrees(native, storage, m):
    rng = np.random.default_rng(3)
    l = 21
    q, sc, Dd = _atoms(rng, l, m, storage)
    W = rng.standard_normal((17, l)).astype(np.float32)
    W[:, -3:] = 0  # zero weights: no change from those atoms
    X = rng.standard_normal((17, m)).astype(np.float32)
    got = _tiles(native, q, sc).combine(W, l, X.copy())
    ref = X.astype(np.float64) - W.astype(np.float64) @ Dd.astype(np.float64)
    bound = np.abs(X) + np.abs(W).astype(np.float64) @ np.abs(Dd).astype(np.float64)
    assert np.all(np.abs(got - ref) <= RTOL * bound)


def test_shapes_and_dtypes_are_refused(native):
    q = np.zeros((4, 8), np.float32)
    with pytest.raises(ValueError, match="float16 or int8"):
        _tiles(native, q, None)
    with pytest.raises(ValueError, match="scale per atom"):
        _tiles(native, q.astype(np.int8), None)
    t = _tiles(native, q.astype(np.float16), None)
    with pytest.raises(ValueError, match="5 atoms asked, 4 stored"):
        t.correlate(np.zeros((1, 8), np.float32), 5, np.zeros((1, 5), np.float32))
    with pytest.raises(ValueError, match="at least 8 contiguous"):
        t.correlate(np.zeros((1, 7), np.float32), 4, np.zeros((1, 4), np.float32))


@pytest.mark.parametrize("storage", STORAGE)
def test_encode_plan_matches_the_reference(native, storage):
    rng = np.random.default_rng(5)
    lb, m, k = 40, 300, 6
    q, sc, Dd = _atoms(rng, lb, m, storage)
    G = (Dd @ Dd.T).astype(np.float32)
    Li = np.zeros_like(G)
    from hal.backends.native.stored import StoredBasisWorkspace
    ws = StoredBasisWorkspace(native, q, sc, G, Li)
    ref = Reference(hal.get_backend("numpy"), q, sc, G.copy(), Li.copy())
    X = (rng.standard_normal((70, 12)) @ Dd[:12] * 3).astype(np.float32)
    X += 0.01 * rng.standard_normal(X.shape).astype(np.float32)
    mean = rng.standard_normal(m).astype(np.float32) * 0.1
    scale = rng.uniform(0.5, 2, m).astype(np.float32)
    raw = X * scale + mean
    out = []
    for w, plan_args in ((ws, {}), (ref, {})):
        p = w.plan(lb, k, mean=mean, scale=scale, width=k + 2, **plan_args)
        idx = np.empty((70, k + 2), np.int32)
        val = np.empty((70, k + 2), np.float32)
        p.encode(raw, idx, val)
        out.append((idx, val))
    (gi, gv), (ri, rv) = out
    # a fresh plan coding single rows first (its one-row scratch), the tiles grown by a
    # 16-row product meanwhile, then a batch (the plan takes the group scratch): same bits
    ws2 = StoredBasisWorkspace(native, q, sc, G, Li)
    p2 = ws2.plan(lb, k, mean=mean, scale=scale, width=k + 2)
    i1, v1 = np.empty((1, k + 2), np.int32), np.empty((1, k + 2), np.float32)
    p2.encode(raw[5:6], i1, v1)
    ws2._tiles.correlate(raw[:16], lb, np.empty((16, lb), np.float32))
    i2, v2 = np.empty((70, k + 2), np.int32), np.empty((70, k + 2), np.float32)
    p2.encode(raw, i2, v2)
    p2.encode(raw[5:6], i1, v1)
    np.testing.assert_array_equal(i2, gi)
    np.testing.assert_array_equal(v2, gv)
    np.testing.assert_array_equal(i1[0], gi[5])
    np.testing.assert_array_equal(v1[0], gv[5])
    np.testing.assert_array_equal(gi[:, k:], -1)
    np.testing.assert_array_equal(gv[:, k:], 0)

    def dense(i, v):
        d = np.zeros((70, lb))
        for r in range(70):
            ok = i[r] >= 0
            d[r, i[r, ok]] = v[r, ok]
        return d
    a, b = dense(gi, gv), dense(ri, rv)
    assert np.all(np.abs(a - b) <= 1e-4 * np.abs(b).max(axis=1, keepdims=True))
    with pytest.raises(ValueError, match="NaN"):
        bad = raw[:2].copy()
        bad[1, 3] = np.nan
        ws.plan(lb, k).encode(bad, np.empty((2, k), np.int32), np.empty((2, k), np.float32))


def _stream_data(seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((260, 10)) @ rng.standard_normal((10, 90))).astype(np.float32)


@pytest.mark.parametrize("storage", STORAGE)
def test_stream_on_native_follows_numpy_and_any_cut(native, storage):
    X = _stream_data(2)
    kw = dict(l=20, k=4, alpha=0.3, dictionary_dtype=storage)
    nat = StreamingDictionary(backend="native", **kw)
    whole = nat.fit_transform(X)
    assert type(nat._bws).__module__ == "hal.backends.native.stored"
    ref = StreamingDictionary(backend="numpy", **kw).fit(X)
    assert nat.n_atoms_ == ref.n_atoms_
    np.testing.assert_array_equal(nat._D, ref._D)  # the same joins: the same stored atoms
    if storage == "int8":
        np.testing.assert_array_equal(nat._D_scale, ref._D_scale)
    np.testing.assert_allclose(nat._G, ref._G, atol=1e-5)
    codes, want = nat.transform(X[:50]), ref.transform(X[:50])
    assert np.all(np.abs(codes - want) <= 1e-4 * np.abs(want).max(axis=1, keepdims=True))
    cut = StreamingDictionary(backend="native", **kw)
    parts = [cut.partial_fit_transform(X[s:s + 37]) for s in range(0, 260, 37)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    rows = StreamingDictionary(backend="native", **kw)
    singles = np.concatenate([rows.partial_fit_transform(X[i:i + 1]) for i in range(40)])
    np.testing.assert_array_equal(singles, whole[:40])
    one = np.concatenate([nat.transform(X[i:i + 1]) for i in range(8)])
    np.testing.assert_array_equal(one, nat.transform(X[:8]))


def test_float64_compute_takes_the_reference_tiles(native):
    X = _stream_data(6).astype(np.float64)
    kw = dict(l=12, k=3, alpha=0.3, dtype="float64", dictionary_dtype="float16")
    nat = StreamingDictionary(backend="native", **kw).fit(X)
    assert type(nat._bws) is Reference
    ref = StreamingDictionary(backend="numpy", **kw).fit(X)
    np.testing.assert_array_equal(nat._D, ref._D)
    np.testing.assert_allclose(nat.transform(X[:20]), ref.transform(X[:20]), atol=1e-9)


@pytest.mark.parametrize("storage", STORAGE)
def test_blas_codes_stored_atoms_on_the_native_kernels(native, storage, require_backend):
    """The execution rule (hal.execution) over stored atoms: a blas stream codes with
    ``stored.c``'s encode while the Wp test and the joins stay on blas (the NumPy
    reference's tiles: the same joins, so the same stored atoms, as the native backend's
    stream; G from other products, within rounding), so its codes agree with the native
    stream's to the native tolerance and any batch split gives the same bits."""
    require_backend("blas")
    X = _stream_data(3)
    kw = dict(l=20, k=4, alpha=0.3, dictionary_dtype=storage)
    bl = StreamingDictionary(backend="blas", **kw)
    whole = bl.fit_transform(X)
    plan = bl._bws.exec_plan(bl.n_atoms_, 4)
    assert type(plan).__module__ == "hal.backends.native.stored"
    nat = StreamingDictionary(backend="native", **kw)
    theirs = nat.fit_transform(X)
    np.testing.assert_array_equal(bl._D, nat._D)
    np.testing.assert_array_equal(np.abs(whole) > 0, np.abs(theirs) > 0)
    big = np.abs(theirs).max(axis=1, keepdims=True)
    assert np.all(np.abs(whole - theirs) <= 1e-4 * big)
    one = np.concatenate([bl.transform(X[i:i + 1]) for i in range(8)])
    np.testing.assert_array_equal(one, bl.transform(X[:8]))
    cut = StreamingDictionary(backend="blas", **kw)
    parts = [cut.partial_fit_transform(X[s:s + 37]) for s in range(0, len(X), 37)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    rows = StreamingDictionary(backend="blas", **kw)
    singles = np.concatenate([rows.partial_fit_transform(X[i:i + 1]) for i in range(40)])
    np.testing.assert_array_equal(singles, whole[:40])


@pytest.mark.parametrize("backend", ["native", "blas"])
@pytest.mark.parametrize("storage", STORAGE)
def test_atoms_joining_after_the_kernels_are_bound(native, backend, storage, require_backend,
                                                   tmp_path):
    """The kernels keep the atoms transposed (stored.c): a transform before more joins binds
    them (the native workspace's tiles; blas: the execution plan's), the joins after it
    must reach that copy - the codes then equal those of the same dictionary loaded afresh
    (its copy made from the stored atoms at once)."""
    require_backend(backend)
    # rank 10, then rows off that subspace (new atoms)
    X = np.concatenate([_stream_data(4)[:60], _stream_data(5)[:100]])
    kw = dict(l=30, k=4, alpha=0.3, dictionary_dtype=storage)
    sd = StreamingDictionary(backend=backend, **kw).fit(X[:60])
    before = sd.n_atoms_
    sd.transform(X[:5])
    sd.transform(X[:1])
    sd.partial_fit(X[60:])
    assert sd.n_atoms_ > before
    path = str(tmp_path / "d.npz")
    sd.save(path)
    fresh = StreamingDictionary.load(path, backend=backend)
    np.testing.assert_array_equal(sd.transform(X[:50]), fresh.transform(X[:50]))
    np.testing.assert_array_equal(sd.transform(X[7:8]), fresh.transform(X[7:8]))


@pytest.mark.parametrize("storage", STORAGE)
def test_one_row_kernel_call_is_the_batch_encode(native, storage):
    # a stored dictionary's plan offers the one-row kernel call (kernel_rows) that
    # transform and transform_into take for a lone row: the bits of the batch encode, a NaN
    # refused with nothing written
    X = _stream_data(4)
    sd = StreamingDictionary(backend="native", l=20, k=4, alpha=0.3, standardize=True,
                             n_standardize=40, dictionary_dtype=storage).fit(X[:200])
    into = sd._prepare_into(store=False)
    assert type(into[6]).__name__ == "StoredEncodePlan" and into[7] is not None
    ref = sd.transform(X[200:], dense=False)
    idx, val = np.empty((1, 4), np.int32), np.empty((1, 4), np.float32)
    for r in range(60):
        one = sd.transform(X[200 + r:201 + r], dense=False)
        assert into[7](X[200 + r:201 + r], idx, val)
        for i, v in ((one.indices, one.values), (idx, val)):
            np.testing.assert_array_equal(i[0], ref.indices[r])
            np.testing.assert_array_equal(v[0].view(np.uint32), ref.values[r].view(np.uint32))
    bad = X[200:201].copy()
    bad[0, 7] = np.nan
    idx[:], val[:] = 5, 2.0
    assert not into[7](bad, idx, val)
    assert np.all(idx == 5) and np.all(val == 2.0)
    with pytest.raises(ValueError, match="NaN"):
        sd.transform(bad)
