"""G and Li packed in one array while a stored dictionary fills (hal.backends.numpy.packed,
the small-memory plans' ``packed_gram``): the products against explicit matrices, the
stream against the unpacked one, checkpoints both ways."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hal
from hal.backends.numpy.basis import inverse_factor
from hal.backends.numpy.packed import PackedGram
from tinydl.lowmem import plan_backend
from tinydl.transform import StreamingDictionary


def _gram(rng, n, m=40):
    D = rng.standard_normal((n, m))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    return (D @ D.T).astype(np.float32)


def _pack(G, Li, lb):
    n = G.shape[0]
    B = np.zeros((lb, lb), np.float32)
    gd = np.zeros(lb, np.float32)
    B[:n, :n] = np.triu(G, 1) + np.tril(Li)
    gd[:n] = np.diagonal(G)
    return B, gd


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 40), extra=st.integers(0, 5), seed=st.integers(0, 2 ** 16))
def test_packed_products_match_the_explicit_factor(n, extra, seed):
    """``C Li^T``, ``Z Li``, ``Li g`` and G's rows from the packed array agree with the
    same products on explicit G and Li (float64 reference, float32 rounding); G's rows are
    copied exactly."""
    rng = np.random.default_rng(seed)
    G = _gram(rng, n)
    Li = inverse_factor(G, np.float32)
    lb = n + extra
    B, gd = _pack(G, Li, lb)
    pk = PackedGram(B, gd, hal.get_backend("numpy"))
    C = rng.standard_normal((16, n)).astype(np.float32)
    Z = np.empty((16, n), np.float32)
    pk.li_rows(C, n, Z)
    L64 = Li.astype(np.float64)
    tol = dict(rtol=1e-4, atol=1e-4 * float(np.abs(L64).max()) * n)
    np.testing.assert_allclose(Z, C @ L64.T, **tol)
    np.testing.assert_allclose(pk.li_right(C, n), C @ L64, **tol)
    np.testing.assert_allclose(pk.li_right(C[:1], n, rows=False)[0], C[0] @ L64, **tol)
    np.testing.assert_allclose(pk.li_vec(C[0], n), L64 @ C[0], **tol)
    j = rng.integers(0, n, 7)
    out = np.empty((7, n), np.float32)
    pk.view(n).take_rows(j, out)
    np.testing.assert_array_equal(out, G[j])
    np.testing.assert_array_equal(pk.view(n).diagonal(), np.diagonal(G))
    # full: unpacking leaves G itself
    if extra == 0:
        np.testing.assert_array_equal(pk.unpack(), G)


def _stream(shared_rng=0, n=600, m=64, classes=6):
    rng = np.random.default_rng(shared_rng)
    centers = rng.standard_normal((classes, m))
    y = rng.integers(0, classes, n)
    X = (centers[y] + 0.7 * rng.standard_normal((n, m))).astype(np.float32)
    return X


def _fit(X, packed, chunk, dtype="int8", l=24, k=4):
    be = plan_backend("numpy", batch=4, dt_copy=False, packed_gram=packed)
    tr = StreamingDictionary(l=l, k=k, alpha=0.3, standardize=False, backend=be,
                             dictionary_dtype=dtype)
    codes = [tr.partial_fit_transform(X[s:s + chunk]) for s in range(0, len(X), chunk)]
    return tr, codes


def _dense(codes, l):
    return np.concatenate([c.to_dense() if hasattr(c, "to_dense") else c for c in codes])


@pytest.mark.parametrize("dtype", ["int8", "float16"])
def test_packed_stream_joins_the_same_atoms_and_then_codes_bit_for_bit(dtype):
    """A stored dictionary filled with G and Li packed keeps the same atoms as the unpacked
    one (Wp differs by rounding only), its Li is dropped when full, and from then on its
    state and codes are the unpacked one's, bit for bit."""
    X = _stream()
    a, ca = _fit(X, False, 4, dtype)
    b, cb = _fit(X, True, 4, dtype)
    assert b._Li is None and a.n_atoms_ == b.n_atoms_ == 24
    np.testing.assert_array_equal(a._D, b._D)
    np.testing.assert_array_equal(a._G, b._G)  # unpacked when full: the same Gram matrix
    da, db = _dense(ca, 24), _dense(cb, 24)
    np.testing.assert_allclose(da, db, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(a.transform(X[:50]),
                                  b.transform(X[:50]))
    # Wp of a full dictionary that dropped its factor: computed from G
    np.testing.assert_allclose(b.projection_error(X[:20]), a.projection_error(X[:20]),
                               rtol=1e-4, atol=1e-4)


def test_packed_stream_does_not_depend_on_its_split():
    """Rows one at a time and seven at a time give the same bits (the packed products keep
    each row independent of its neighbours)."""
    X = _stream(1, n=200)
    a, ca = _fit(X, True, 1, l=100)
    b, cb = _fit(X, True, 7, l=100)
    assert 0 < a.n_atoms_ < 100  # still filling (m=64): the packed path all along
    np.testing.assert_array_equal(a._G, b._G)
    np.testing.assert_array_equal(a._Gd, b._Gd)
    np.testing.assert_array_equal(_dense(ca, 100), _dense(cb, 100))


def test_packed_checkpoint_resumes_bit_for_bit_and_loads_unpacked(tmp_path):
    """Saved while filling (G's upper triangle with Li, and G's diagonal) and loaded onto the
    packed backend, the stream continues as if never stopped; loaded onto a plain backend
    it has the unpacked state (G exactly, Li to rounding) and goes on filling."""
    X = _stream(2, n=300)
    full, _ = _fit(X, True, 5, l=60)
    half, _ = _fit(X[:100], True, 5, l=60)
    assert 0 < half.n_atoms_ < 60
    half.save(tmp_path / "t.npz")
    back = StreamingDictionary.load(tmp_path / "t.npz", backend=plan_backend(
        "numpy", batch=4, dt_copy=False, packed_gram=True))
    assert back._Li is None
    for s in range(100, 300, 5):
        back.partial_fit(X[s:s + 5])
    np.testing.assert_array_equal(back._D, full._D)
    np.testing.assert_array_equal(back._G, full._G)
    plain = StreamingDictionary.load(tmp_path / "t.npz", backend="numpy")
    ref, _ = _fit(X[:100], False, 5, l=60)
    n = ref.n_atoms_
    assert plain.n_atoms_ == n and plain._Li is not None
    np.testing.assert_array_equal(plain._G[:n, :n], ref._G[:n, :n])
    np.testing.assert_allclose(plain._Li[:n, :n], ref._Li[:n, :n], rtol=1e-3, atol=1e-3)
    plain.partial_fit(X[100:200])
    assert plain.n_atoms_ > n


def test_a_full_packed_dictionary_saves_g_alone_and_loads_anywhere(tmp_path):
    """Full, the packed dictionary has dropped Li: its file holds G only, and a plain
    backend loading it rebuilds Li from G (its codes are the same: Li is not read)."""
    X = _stream(3)
    tr, _ = _fit(X, True, 8)
    tr.save(tmp_path / "t.npz")
    with np.load(tmp_path / "t.npz", allow_pickle=False) as z:
        assert "G" in z.files and "Linv" not in z.files and "GLi" not in z.files
    plain = StreamingDictionary.load(tmp_path / "t.npz", backend="numpy")
    np.testing.assert_array_equal(plain._G, tr._G)
    np.testing.assert_array_equal(plain.transform(X[:40]),
                                  tr.transform(X[:40]))


def test_the_customizer_packs_only_when_the_budget_needs_it(tmp_path):
    """At UJIIndoorLoc's shape a roomy budget keeps Li apart; 256 KiB packs it (int8 atoms,
    NumPy/BLAS backend) and the plan's backend carries the option; the plan file round-trips
    it and refuses a non-boolean value."""
    import json

    from tinydl.customize import plan
    from tinydl.plan import load_plan
    roomy = plan(520, 13, memory_bytes=8 << 20, standardize=False, n_samples=20000)
    tight = plan(520, 13, memory_bytes=256 << 10, standardize=False, n_samples=20000)
    assert not roomy.packed_gram
    assert tight.packed_gram and tight.dictionary_dtype in ("int8", "float16")
    names = {b["name"] for b in tight.buffers}
    assert "transform.Li" not in names and "transform.Gdiag" in names
    assert getattr(tight.backend_object(), "packed_gram", False)
    path = tmp_path / "p.json"
    tight.save(path)
    assert load_plan(path).packed_gram is True
    d = json.loads(path.read_text())
    d["packed_gram"] = "yes"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="packed_gram"):
        load_plan(path)


def test_plan_backend_packs_only_numpy_workspaces():
    """The option is an attribute of the NumPy-family backends a plan sizes; a backend
    without NumPy's OMP workspaces (native) is returned by name, unchanged."""
    assert getattr(plan_backend("numpy", packed_gram=True), "packed_gram", False)
    assert plan_backend("numpy") == "numpy"
    assert not hasattr(plan_backend("numpy", batch=4), "packed_gram")


def test_a_resumed_fit_runs_on_the_backend_its_plan_sized(shared_data, tmp_path):
    """`tinydl fit --resume` without --backend takes the plan's sized backend from the model
    directory (before, the checkpoint's backend name: Li unpacked again, an l x l array over
    the plan): the checkpoint the resumed run writes while the dictionary fills is packed."""
    data = shared_data / "ujiindoorloc.npz"
    if not data.exists():
        pytest.skip(f"{data} is absent")
    from tinydl.checkpoint import latest
    from tinydl.cli import main
    plan_path, out = tmp_path / "p.json", tmp_path / "m"
    assert main(["plan", "--data", str(data), "--memory", "256KiB", "-o", str(plan_path)]) == 0
    assert main(["fit", str(data), "--plan", str(plan_path), "--shuffle", "0", "--limit", "20",
                 "-o", str(out), "--quiet"]) == 0
    assert main(["fit", str(data), "--resume", "--shuffle", "0", "--limit", "40", "-o", str(out),
                 "--quiet"]) == 0
    with np.load(out / latest(out) / "transform.npz", allow_pickle=False) as z:
        assert int(z["n_samples_seen_"]) == 40 and 0 < int(z["n_atoms_"]) < int(z["l"])
        assert "GLi" in z.files and "Linv" not in z.files


def test_a_packed_transform_never_runs_on_an_omp_kernel_of_its_own(require_backend):
    """native has an OMP kernel that takes plain arrays: a plan never packs for it, and a
    packed transform moved there (set_params, then a copy rebinds it) keeps NumPy's
    Batch-OMP, with the same atoms as one that stayed."""
    import copy
    require_backend("native")
    assert not hasattr(plan_backend("native", batch=4, dt_copy=False, packed_gram=True),
                       "packed_gram")
    X = _stream(4, n=300)
    a, _ = _fit(X[:100], True, 5, l=60)
    b = copy.deepcopy(a)
    b.set_params(backend="native")
    b = copy.deepcopy(b)
    for s in range(100, 300, 5):
        a.partial_fit(X[s:s + 5])
        b.partial_fit(X[s:s + 5])
    assert a.n_atoms_ == b.n_atoms_
    np.testing.assert_array_equal(a._D, b._D)


def test_files_missing_their_factor_are_refused_by_name(tmp_path):
    """A dictionary still filling whose file lacks Li, or a full one whose G has a zero
    diagonal, is refused with the reason (not an older format's missing array)."""
    from tinydl.io import load_npz, save_npz
    from tinydl.transform import _KIND, _VERSION
    X = _stream(5, n=60)
    a, _ = _fit(X, False, 5, l=60)
    assert a.n_atoms_ < 60
    a.save(tmp_path / "t.npz")
    arrs = dict(load_npz(tmp_path / "t.npz", _KIND, max_version=_VERSION))
    arrs.pop("Linv")
    save_npz(tmp_path / "bad.npz", arrs, _KIND, _VERSION)
    with pytest.raises(ValueError, match="Linv is missing"):
        StreamingDictionary.load(tmp_path / "bad.npz")
    full, _ = _fit(_stream(6), True, 8)
    full.save(tmp_path / "f.npz")
    arrs = dict(load_npz(tmp_path / "f.npz", _KIND, max_version=_VERSION))
    G = arrs["G"].copy()
    G[-1, -1] = 0
    arrs["G"] = G
    save_npz(tmp_path / "bad2.npz", arrs, _KIND, _VERSION)
    with pytest.raises(ValueError, match="diagonal"):
        StreamingDictionary.load(tmp_path / "bad2.npz")
