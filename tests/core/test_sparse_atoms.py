"""Sparse int8 atoms (dictionary_nnz; hal.backends.numpy.stored.SparseAtoms): each atom kept
as its largest entries.  Wide enough, the codes are the dense int8 dictionary's bit for bit
(NumPy backend); narrower, the atoms lose their smallest entries and Wp and OMP stay exact
for the atoms as stored (scikit-learn's OMP on them is the reference); the state round-trips
through the model file and a learner checkpoint; the customizer offers the storage by its
rule and prices it."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal.backends.numpy.stored import SparseAtoms
from tinydl.customize import SPARSE_ATOMS, BudgetInfeasible, plan, plan_footprint, sparse_width
from tinydl.errors import ModelFileError
from tinydl.transform import StreamingDictionary


def _sparse_rows(seed, n=400, m=120, nnz=(3, 14)):
    """Non-negative rows with a few non-zeros each, clustered as fingerprints are."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n, m), np.float32)
    for i in range(n):
        c = rng.integers(0, 12)  # a place: its columns lie near 10 c
        cols = (10 * c + rng.integers(0, 24, rng.integers(*nnz))) % m
        X[i, cols] = rng.uniform(0.1, 1.0, cols.size)
    return X


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(0, 2 ** 31 - 1))
def test_store_keeps_the_largest_entries_and_decodes_them(width, seed):
    rng = np.random.default_rng(seed)
    m = 40
    q = np.where(rng.random(m) < 0.4, rng.integers(-127, 128, m), 0).astype(np.int8)
    A = SparseAtoms(3, m, width)
    A[1] = q
    # the rule transcribed: the `width` largest |q|, ties to the lower column
    nz = [j for j in range(m) if q[j]]
    keep = sorted(sorted(nz, key=lambda j: (-abs(int(q[j])), j))[:width])
    ref = np.zeros(m, np.int8)
    ref[keep] = q[keep]
    got = A[0:3]
    assert got.dtype == np.int8 and got.shape == (3, m)
    np.testing.assert_array_equal(got[1], ref)
    assert not got[0].any() and not got[2].any()
    scale = np.array([1.0, 0.5, 2.0], np.float32)
    out = np.full((2, m), 7.0, np.float32)
    A.decode_into(1, 3, scale, out)
    np.testing.assert_array_equal(out[0], 0.5 * ref.astype(np.float32))
    assert not out[1].any()
    assert A.nbytes == 3 * A.width * 3


def test_store_refuses_what_it_cannot_hold():
    with pytest.raises(ValueError, match="65,536"):
        SparseAtoms(2, 70000, 8)
    with pytest.raises(ValueError, match="width"):
        SparseAtoms(2, 10, 0)
    A = SparseAtoms(2, 10, 4)
    with pytest.raises(TypeError, match="int8 row of 10"):
        A[0] = np.zeros(10, np.float32)
    with pytest.raises(TypeError, match="slice"):
        A[[0, 1]]


@pytest.mark.parametrize("backend", ["numpy", "blas"])
def test_wide_enough_it_is_the_dense_int8_dictionary(backend, require_backend):
    if backend != "numpy":  # a skip naming why; a failure under TINYDL_REQUIRE_BLAS=1
        require_backend(backend)
    X = _sparse_rows(0)
    kw = dict(l=40, k=5, alpha=0.5, dtype="float32", dictionary_dtype="int8", backend=backend)
    dense = StreamingDictionary(**kw)
    ca = dense.fit_transform(X)
    sparse = StreamingDictionary(**kw, dictionary_nnz=16)  # every row has < 16 non-zeros
    cb = sparse.fit_transform(X)
    np.testing.assert_array_equal(dense.dictionary_, sparse.dictionary_)
    if backend == "numpy":  # one workspace, one order of operations: bit for bit
        np.testing.assert_array_equal(ca, cb)
        np.testing.assert_array_equal(dense.transform(X[:60]), sparse.transform(X[:60]))
    else:  # the dense int8 transform runs native's compiled kernels where it can
        np.testing.assert_allclose(ca, cb, rtol=1e-4, atol=1e-5)
    assert sparse._D.nbytes == 40 * 16 * 3 < dense._D.nbytes == 40 * 120


@pytest.mark.parametrize("backend", ["blas", "native", "opencl", "multiprocessing"])
def test_every_backend_codes_sparse_atoms_as_the_numpy_reference(backend, require_backend):
    # each backend's products on the tiles the NumPy reference decodes: blas and
    # multiprocessing bit for bit here, native and OpenCL (float32 sums in their own order)
    # within float32 rounding
    require_backend(backend)
    X = _sparse_rows(0)
    kw = dict(l=40, k=5, alpha=0.5, dtype="float32", dictionary_dtype="int8",
              dictionary_nnz=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = StreamingDictionary(**kw, backend="numpy")
        cr = ref.fit_transform(X)
        sd = StreamingDictionary(**kw, backend=backend)
        c = sd.fit_transform(X)
        np.testing.assert_allclose(c, cr, atol=1e-5)
        np.testing.assert_allclose(sd.transform(X[:30]), ref.transform(X[:30]), atol=1e-5)
        np.testing.assert_allclose(sd.transform(X[:1]), ref.transform(X[:1]), atol=1e-5)
    assert isinstance(sd._D, SparseAtoms)


def _omp(D, a, k):
    """The paper's Algorithm 1 (OMP), transcribed: pick the atom most correlated with the
    residual, refit the chosen atoms by least squares, k times."""
    support, r = [], a.copy()
    c = np.zeros(len(D))
    for _ in range(k):
        support.append(int(np.argmax(np.abs(D @ r))))
        coef = np.linalg.lstsq(D[support].T, a, rcond=None)[0]
        r = a - D[support].T @ coef
    c[support] = coef
    return c


def test_narrow_atoms_keep_wp_and_omp_exact_for_the_atoms_as_stored():
    X = _sparse_rows(1)
    sd = StreamingDictionary(l=30, k=4, alpha=0.5, dtype="float64", dictionary_dtype="int8",
                             dictionary_nnz=5, backend="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sd.fit(X)
    D = sd.dictionary_
    assert (np.count_nonzero(D, axis=1) <= 5).all() and sd.n_atoms_ == 30
    assert (np.count_nonzero(D, axis=1) == 5).sum() > 10  # most atoms did lose entries
    # G of the atoms as stored
    np.testing.assert_allclose(sd._gram_matrix(), D @ D.T, atol=1e-12)
    H = _sparse_rows(99, n=80).astype(np.float64)  # rows the stream did not see
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        C = sd.transform(H)
    ref = np.array([_omp(D, a, 4) for a in H])
    # the same residual for every row; the same code where the chosen atoms are independent
    # (where the 4th is dependent on the first three, OMP stops and the transcription's
    # least squares spreads the weight: the same fit, another code)
    np.testing.assert_allclose(np.linalg.norm(H - C @ D, axis=1),
                               np.linalg.norm(H - ref @ D, axis=1), atol=1e-8)
    indep = [i for i in range(len(H)) if np.linalg.matrix_rank(D[ref[i] != 0]) == 4]
    assert len(indep) >= 70
    np.testing.assert_allclose(C[indep], ref[indep], atol=1e-8)


def test_model_file_roundtrip_and_resume_are_exact(tmp_path):
    X = _sparse_rows(2)
    kw = dict(l=40, k=5, alpha=0.5, dtype="float32", dictionary_dtype="int8",
              dictionary_nnz=8, backend="numpy")
    whole = StreamingDictionary(**kw).fit(X)
    half = StreamingDictionary(**kw).partial_fit(X[:20])  # still filling
    half.save(tmp_path / "t.npz")
    back = StreamingDictionary.load(tmp_path / "t.npz")
    assert isinstance(back._D, SparseAtoms) and back.dictionary_nnz == 8
    from tinydl.io import FORMAT_KEY
    with np.load(tmp_path / "t.npz", allow_pickle=False) as z:  # a version-3 reader refuses it
        assert str(z[FORMAT_KEY]) == "transform/4" and "D" not in z and "D_idx" in z
    back.partial_fit(X[20:])
    np.testing.assert_array_equal(back.dictionary_, whole.dictionary_)
    np.testing.assert_array_equal(back.transform(X[:50]), whole.transform(X[:50]))
    # a column index past m is caught on load, naming it
    with np.load(tmp_path / "t.npz", allow_pickle=False) as z:
        arrs = dict(z)
    arrs["D_idx"] = arrs["D_idx"].copy()
    arrs["D_idx"][0, 0] = 500
    np.savez(tmp_path / "bad.npz", **arrs)
    with pytest.raises(ModelFileError, match="500 >= m=120"):
        StreamingDictionary.load(tmp_path / "bad.npz")


def test_params_are_checked_before_any_state():
    X = _sparse_rows(3, n=30)
    with pytest.raises(ValueError, match="needs dictionary_dtype='int8'"):
        StreamingDictionary(l=10, k=2, dictionary_nnz=8).fit(X)
    with pytest.raises(ValueError, match="dictionary_nnz"):
        StreamingDictionary(l=10, k=2, dictionary_dtype="int8", dictionary_nnz=0).fit(X)


def test_learner_checkpoint_keeps_sparse_atoms(tmp_path):
    from tinydl.learner import TinyDLClassifier
    X = _sparse_rows(4, n=300)
    y = np.argmax(X.reshape(len(X), 12, 10).sum(2), 1)
    kw = dict(l=30, k=4, alpha=0.5, hidden_layer_sizes=(16,), window=128, n_batch=64,
              epochs_per_update=2, standardize=False, dictionary_dtype="int8",
              dictionary_nnz=16, backend="numpy", seed=0, rebuild="never")
    clf = TinyDLClassifier(**kw).fit(X, y)
    assert isinstance(clf.transform_._D, SparseAtoms)
    clf.save(str(tmp_path / "ck"))
    back = TinyDLClassifier.load(str(tmp_path / "ck"))
    assert back.dictionary_nnz == 16 and isinstance(back.transform_._D, SparseAtoms)
    np.testing.assert_array_equal(back.predict(X[:40]), clf.predict(X[:40]))


def test_width_rule_and_the_plan_that_uses_it():
    X = _sparse_rows(5, n=500, m=240)
    w = sparse_width(X)
    assert w % 8 == 0 and w >= np.count_nonzero(X, axis=1).max() and w * SPARSE_ATOMS <= 240
    assert sparse_width(np.ones((10, 240))) is None  # dense rows: dense atoms
    # a budget the dense int8 dictionary misses at l=100 and the sparse one meets
    args = dict(l_choices=(100,), k_choices=(5,), window_choices=(128,),
                hidden_choices=((16,),), standardize=False)
    dense = plan_footprint(240, 5, 100, 5, (16,), 128, dictionary_dtype="int8",
                           standardize="off", raw_rows=False)["total"]
    sparse = plan_footprint(240, 5, 100, 5, (16,), 128, dictionary_dtype="int8",
                            standardize="off", raw_rows=False, dictionary_nnz=w)["total"]
    # (l, m) int8 against (l, w) uint16 + int8 and the decode's (2, 16, w) int64 indices
    assert dense - sparse == 100 * 240 - (100 * w * 3 + 2 * 16 * w * 8)
    # the least memory that fits l=100 (the error names it) takes the sparse atoms; the
    # dense ones need more
    with pytest.raises(BudgetInfeasible) as info:
        plan(240, 5, memory_bytes=4096, dictionary_nnz=w, **args)
    least = int(info.value.needs["memory"])
    p = plan(240, 5, memory_bytes=least, dictionary_nnz=w, **args)
    assert p.dictionary_dtype == "int8" and p.dictionary_nnz == w and p.footprint_bytes <= least
    assert p.learner_params()["dictionary_nnz"] == w
    assert f"each atom's {w} largest entries" in p.summary()
    with pytest.raises(BudgetInfeasible):
        plan(240, 5, memory_bytes=least, **args)
    # a budget with room for dense atoms keeps them; without dictionary_nnz, none are offered
    assert plan(240, 5, memory_bytes=10 * 2 ** 20, dictionary_nnz=w, **args).dictionary_nnz \
        is None
    assert plan(240, 5, memory_bytes=10 * 2 ** 20, alpha_rows=X, **args).dictionary_nnz is None


def test_command_line_plan_fit_and_evaluate_with_sparse_atoms(tmp_path):
    """A plan with sparse atoms (the least memory that fits l=64) runs through `tinydl fit
    --plan` (the learner, its checkpoints) and `tinydl evaluate`; `tinydl plan
    --dictionary-nnz auto` passes the data's width to the customizer."""
    import json
    import os
    import subprocess
    import sys
    X = _sparse_rows(6, n=900, m=240)
    y = np.argmax(X.reshape(len(X), 12, 20).sum(2), 1) % 5
    data = tmp_path / "sparse.npz"
    np.savez(data, X_train=X[:700], y_train=y[:700], X_test=X[700:], y_test=y[700:])
    w = sparse_width(X[:700])
    kw = dict(l_choices=(64,), standardize=False, n_samples=700)
    with pytest.raises(BudgetInfeasible) as info:
        plan(240, 5, memory_bytes=4096, dictionary_nnz=w, **kw)
    least = int(info.value.needs["memory"])
    p = plan(240, 5, memory_bytes=least, dictionary_nnz=w, **kw)
    assert p.dictionary_nnz == w
    p.save(tmp_path / "p.json")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root, OPENBLAS_NUM_THREADS="1")

    def tinydl(*args, rc=0):
        r = subprocess.run([sys.executable, "-m", "tinydl", *map(str, args)], env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == rc, r.stderr
        return r.stdout + r.stderr
    fit = json.loads(tinydl("fit", data, "--plan", tmp_path / "p.json", "--shuffle", 0, "-o",
                            tmp_path / "model", "--quiet", "--json", "-"))
    assert fit["params"]["dictionary_nnz"] == w and fit["n_atoms"] == 64
    ev = json.loads(tinydl("evaluate", tmp_path / "model", "--data", data, "--json"))
    assert ev["accuracy"] > 0.5
    # the command line: the width from the data where rows are sparse, refused where not
    out = json.loads(tinydl("plan", "--data", data, "--memory", f"{least}B",
                            "--dictionary-nnz", "auto", "--json", "-"))
    assert out["footprint_bytes"] <= least
    assert out.get("dictionary_nnz") in (None, w)  # sparse atoms only at the data's width
    assert "positive integer or 'auto'" in tinydl("plan", "--m", 240, "--classes", 5,
                                                  "--dictionary-nnz", "0", rc=2)
