"""A model file whose parts were changed apart from each other is refused on load, naming the
part (the atoms, their int8 scales and the Gram matrix are saved separately: codes from a
mismatched set would be silently wrong); parameters that a state cannot be saved or stored
with are refused before any state changes or any file is written."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from tinydl.errors import ModelFileError
from tinydl.transform import StreamingDictionary


def _rows(seed, n=200, m=30, sparse=False):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 25)) @ rng.standard_normal((25, m))
    if sparse:  # few non-zeros a row, as UJIIndoorLoc's
        X *= rng.random((n, m)) < 0.3
    return X.astype(np.float32)


STORES = {"float32": {}, "float16": dict(dictionary_dtype="float16"),
          "int8": dict(dictionary_dtype="int8"),
          "sparse int8": dict(dictionary_dtype="int8", dictionary_nnz=12)}


def _saved(tmp_path, store):
    X = _rows(0, sparse=store == "sparse int8")
    sd = StreamingDictionary(l=20, k=4, alpha=0.3, **STORES[store]).fit(X)
    sd.save(tmp_path / "t.npz")
    with np.load(tmp_path / "t.npz", allow_pickle=False) as z:
        return sd, X, {k: v.copy() for k, v in z.items()}


def _refused(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ModelFileError, match=match):
        StreamingDictionary.load(tmp_path / "bad.npz")


@pytest.mark.parametrize("store", list(STORES))
def test_a_zero_atom_or_an_atom_changed_apart_from_g_is_refused(tmp_path, store):
    sd, X, arrs = _saved(tmp_path, store)
    back = StreamingDictionary.load(tmp_path / "t.npz")  # as written: loads, same codes
    np.testing.assert_array_equal(back.transform(X[:20]), sd.transform(X[:20]))
    key = "D_val" if store == "sparse int8" else "D"
    bad = dict(arrs)
    bad[key] = arrs[key].copy()
    bad[key][3] = 0
    _refused(tmp_path, bad, "atom 3 of 20 is zero")
    bad[key] = arrs[key].copy()
    bad[key][5] = -bad[key][5]  # a unit-norm atom still, but not the one G was built from
    _refused(tmp_path, bad, r"G is not the Gram matrix of the stored atoms .*: G\[")
    bad = dict(arrs)
    bad["G"] = arrs["G"].copy()
    bad["G"][2, 7] = bad["G"][7, 2] = bad["G"][2, 7] + 0.25
    _refused(tmp_path, bad, r"G\[(2, 7|7, 2)\]")


@pytest.mark.parametrize("store", ["int8", "sparse int8"])
@pytest.mark.parametrize("value,match", [
    (0.0, r"D_scale\[4\] = 0: an atom's scale must be > 0 \(1 of 20"),
    (-0.01, r"D_scale\[4\] = -0.01"), (1e30, "G is not the Gram matrix")])
def test_an_int8_scale_that_is_not_the_atoms_is_refused(tmp_path, store, value, match):
    _, _, arrs = _saved(tmp_path, store)
    arrs["D_scale"][4] = value
    _refused(tmp_path, arrs, match)


def test_an_int8_value_the_quantizer_never_writes_is_refused(tmp_path):
    _, _, arrs = _saved(tmp_path, "int8")
    arrs["D"][1, 0] = -128
    _refused(tmp_path, arrs, "int8 value -128; stored atoms lie in -127..127")


def test_sparse_indices_all_naming_one_column_are_refused(tmp_path):
    _, _, arrs = _saved(tmp_path, "sparse int8")
    arrs["D_idx"][6] = arrs["D_idx"][6, 0]
    _refused(tmp_path, arrs, "G is not the Gram matrix|atom 6 of 20 is zero")


def test_a_non_finite_value_is_named_with_its_position_and_count(tmp_path):
    _, _, arrs = _saved(tmp_path, "float16")
    arrs["D"][2, 9] = np.inf
    arrs["D"][4, 1] = np.nan
    _refused(tmp_path, arrs, r"D should be finite: 2 of 600 values are not, the first inf at "
                             r"\(2, 9\)")


@pytest.mark.parametrize("compute,stored", [("float64", "float32"), ("float32", "float64")])
def test_a_float_storage_other_than_the_compute_dtype_is_refused_first(compute, stored):
    # the kernels keep atoms as they compute or narrower: the file and the plan would name
    # one dtype and the state hold the other
    X = _rows(1).astype(compute)
    sd = StreamingDictionary(l=10, k=3, dictionary_dtype=stored)
    with pytest.raises(ValueError, match=f"dictionary_dtype='{stored}' with compute dtype "
                                         f"{compute}"):
        sd.fit(X)
    assert not sd._fitted()
    from tinydl.learner import TinyDLClassifier
    y = np.arange(len(X)) % 3
    clf = TinyDLClassifier(l=10, k=3, dtype=compute, dictionary_dtype=stored)
    with pytest.raises(ValueError, match="with compute dtype"):
        clf.fit(X, y)
    assert not hasattr(clf, "transform_")
    from tinydl.customize import plan
    with pytest.raises(ValueError, match="with compute dtype"):
        plan(30, 3, dtype=compute, dictionary_dtype=stored)
    # its own name is the compute dtype: stored as computed, saved and loaded as such
    same = StreamingDictionary(l=10, k=3, dictionary_dtype=compute).fit(X)
    assert same._D.dtype == compute


def test_a_plan_file_pairing_other_floats_is_refused(tmp_path):
    import json

    from tinydl.customize import plan
    from tinydl.plan import load_plan
    plan(30, 3).save(tmp_path / "p.json")
    d = json.loads((tmp_path / "p.json").read_text())
    d["dtype"], d["dictionary_dtype"] = "float64", "float32"
    (tmp_path / "p.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="plan dictionary_dtype='float32' with compute dtype "
                                         "float64"):
        load_plan(tmp_path / "p.json")


@pytest.mark.parametrize("name,value", [("dictionary_dtype", "float16"),
                                        ("dictionary_dtype", None), ("dictionary_nnz", 5),
                                        ("l", 30)])
def test_save_refuses_a_storage_parameter_changed_since_the_stream_started(tmp_path, name,
                                                                         value):
    # the file would pair the new value with the old state, and no load could read it
    sd = StreamingDictionary(l=20, k=3, dictionary_dtype="int8").fit(_rows(3))
    sd.set_params(**{name: value})
    with pytest.raises(ValueError, match=f"{name} changed from .* since the stream started; "
                                         "set it back before saving"):
        sd.save(tmp_path / "s.npz")
    assert not (tmp_path / "s.npz").exists()
    sd.set_params(l=20, dictionary_dtype="int8", dictionary_nnz=None)
    sd.save(tmp_path / "s.npz")
    back = StreamingDictionary.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(back.transform(_rows(4)[:9]), sd.transform(_rows(4)[:9]))


@pytest.mark.parametrize("backend", ["numpy", "blas", "native"])
def test_sparse_atoms_fewer_than_k_code_on_every_backend(backend, require_backend):
    # two directions, k=5: the dictionary stays smaller than the codes are wide, so OMP runs
    # on k = 2 columns of the caller's wider code rows (native's OMP kernel writes whole rows)
    require_backend(backend)
    B = np.zeros((2, 30), np.float32)
    B[0, [1, 5, 9]], B[1, [2, 7]] = [1, 2, 3], [1, 1]
    X = np.random.default_rng(0).random((40, 2)).astype(np.float32) @ B
    kw = dict(l=10, k=5, dictionary_dtype="int8", dictionary_nnz=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = StreamingDictionary(**kw, backend="numpy")
        ref.partial_fit(X[:1])
        cr = ref.partial_fit_transform(X[1:])
        sd = StreamingDictionary(**kw, backend=backend)
        sd.partial_fit(X[:1])
        c = sd.partial_fit_transform(X[1:])
    assert sd.n_atoms_ == ref.n_atoms_ == 2
    np.testing.assert_allclose(c, cr, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sd.transform(X[:7]), ref.transform(X[:7]), rtol=1e-5, atol=1e-6)
