"""The itemized footprint (plan --explain), the small-memory rules, the running standardizer
and the dictionary storage dtypes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tinydl.customize import paper_bytes, plan
from tinydl.footprint import TERMS, by_term, counted, plan_buffers, total
from tinydl.transform import StreamingDictionary
from tinydl.warmup import RunningStandardizer

#: narrowed ladders: each plan then weighs a few dozen candidates (seconds, not minutes)
SMALL = dict(l_choices=(16, 50, 100), k_choices=(5, 10, 20), window_choices=(256, 1024),
             hidden_choices=((16,), (32,)))


def test_explain_itemizes_buffers_that_sum_to_the_plan_total(tmp_path):
    p = plan(520, 13, "x86-64-host", memory_bytes=2 * 2 ** 20, **SMALL)
    assert p.buffers
    rows = counted(list(p.buffers))
    assert sum(b["bytes"] for b in rows) == p.footprint_bytes == p.footprint["total"]
    assert sum(by_term(list(p.buffers)).values()) == p.footprint_bytes
    for b in p.buffers:
        assert b["term"] in TERMS and b["bytes"] >= 0
        if b["shape"]:  # shape x itemsize = bytes
            n = int(np.prod(b["shape"]))
            assert n * np.dtype(b["dtype"]).itemsize == b["bytes"], b
    text = p.explain()
    assert "buffer by buffer" in text and "transform.D" in text
    # the table's total line is the plan's total
    assert f"{p.footprint_bytes:,}" in text.split("buffer by buffer")[1]
    # the buffers travel in the plan's JSON
    p.save(tmp_path / "p.json")
    d = json.loads((tmp_path / "p.json").read_text())
    assert sum(b["bytes"] for b in counted(d["buffers"])) == d["footprint_bytes"]


def test_the_paper_terms_are_the_dictionary_codes_and_parameters():
    buf = plan_buffers(520, 13, 50, 10, (32,), 256, dictionary_dtype="int8",
                       rebuild="never", standardize="running", chunk=16, omp_batch=16)
    terms = by_term(buf)
    assert terms["m*l"] == 50 * 520 + 4 * 50           # int8 atoms and their scales
    assert terms["|param|"] == 4 * (50 * 32 + 32 + 32 * 13 + 13)
    slots = (256 // 13) * 13
    # compact codes: int8 indices (l = 50 <= 127) + float32 values
    assert terms["l*n"] == slots * 10 * (1 + 4)
    assert total(buf) == sum(terms.values())


def test_a_small_budget_gets_no_raw_reservoir_and_a_large_one_does():
    large = plan(520, 13, "x86-64-host", memory_bytes=64 * 2 ** 20, **SMALL)
    assert large.rebuild == "new-class" and large.dictionary_dtype == "float32"
    assert any(b["name"] == "window.raw" for b in large.buffers)
    small = plan(520, 13, "x86-64-host", memory_bytes=1 * 2 ** 20, **SMALL)
    assert small.rebuild == "never" and small.footprint_bytes <= 2 ** 20
    assert not any(b["name"] == "window.raw" for b in small.buffers)
    # the learner the plan builds keeps no raw rows and uses the plan's storage
    lr = small.learner()
    assert lr.rebuild == "never" and lr.dictionary_dtype in (None, small.dictionary_dtype)
    assert small.paper_bytes == paper_bytes(520, small.l, small.window,
                                            _n_params(small), "float32",
                                            small.dictionary_dtype)


def _n_params(p):
    sizes = (p.l,) + tuple(p.hidden_layer_sizes) + (p.n_classes,)
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def test_narrower_storage_only_when_the_wider_does_not_fit():
    # at the paper's setting (l=100, k=20, m=5625): float32 fits 16 MiB, not 3 MiB
    fixed = dict(l_choices=(100,), k_choices=(20,), window_choices=(512,))
    wide = plan(5625, 19, "x86-64-host", memory_bytes=16 * 2 ** 20, **fixed)
    assert wide.dictionary_dtype == "float32"
    tight = plan(5625, 19, "x86-64-host", memory_bytes=int(3.6 * 2 ** 20), **fixed)
    assert tight.dictionary_dtype in ("float16", "int8")
    assert tight.footprint_bytes <= int(3.6 * 2 ** 20)
    with pytest.raises(ValueError, match="dictionary_dtype must be one of"):
        plan(520, 13, dictionary_dtype="int4", **SMALL)


def test_running_standardizer_matches_numpy_and_drops_the_warmup_rows():
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((300, 7)) * [1, 2, 3, 4, 5, 6, 1e-3] + 50).astype(np.float32)
    X[:, 3] = 2.5  # a constant feature: centred only
    st = RunningStandardizer(7, 100, "float32")
    out = [st.push(X[s:s + 33]) for s in range(0, 300, 33)]
    ref = X[:100].astype(np.float64)
    np.testing.assert_allclose(st.mean_, ref.mean(0), rtol=1e-6)
    sd = ref.std(0)
    sd[3] = 1.0
    np.testing.assert_allclose(st.scale_, sd, rtol=1e-4)
    released = np.concatenate([o[0] for o in out if o is not None])
    assert len(released) == 200 and st.n_pending == 100  # the warm-up rows are consumed
    np.testing.assert_allclose(released, (X[100:] - st.mean_) / st.scale_, rtol=1e-6)
    back = RunningStandardizer.from_state(st.state(), 7, 100, "float32")
    np.testing.assert_array_equal(back.mean_, st.mean_)
    # the moments are a warm-up transient: released once the statistics are fixed
    assert st.nbytes == 0 and back.nbytes == 0
    mid = RunningStandardizer(7, 100, "float32")
    mid.push(X[:40])
    assert mid.nbytes == 2 * 7 * 8 and not mid.ready
    again = RunningStandardizer.from_state(mid.state(), 7, 100, "float32")
    again.push(X[40:300])
    np.testing.assert_allclose(again.mean_, st.mean_, rtol=1e-6)
    np.testing.assert_allclose(again.scale_, st.scale_, rtol=1e-6)


@pytest.mark.parametrize("storage", ["float16", "int8"])
def test_stored_dictionary_error_bound_roundtrip_and_codes(tmp_path, storage):
    rng = np.random.default_rng(1)
    X = (rng.standard_normal((400, 12)) @ rng.standard_normal((12, 90))).astype(np.float32)
    X += 0.05 * rng.standard_normal(X.shape).astype(np.float32)
    ref = StreamingDictionary(l=30, k=6, alpha=0.3, dtype="float32").fit(X)
    sd = StreamingDictionary(l=30, k=6, alpha=0.3, dtype="float32",
                             dictionary_dtype=storage).fit(X)
    assert sd._D.dtype == np.dtype(storage) and sd.n_atoms_ == ref.n_atoms_
    D = sd.dictionary_
    assert D.dtype == np.float32
    # each stored atom is its unit-norm sample rounded to the storage
    n = sd.n_atoms_
    if storage == "int8":
        scale = sd._D_scale[:n]
        np.testing.assert_array_equal(D, (sd._D[:n].astype(np.float32) * scale[:, None]))
        # the decoded atom differs from the unit-norm float atom by at most scale / 2
        err = np.abs(D - ref.dictionary_)
        assert np.all(err <= scale[:, None] / 2 + 1e-6)
    else:
        np.testing.assert_allclose(D, ref.dictionary_, atol=2 ** -11)
    # G and the codes are those of the decoded atoms
    np.testing.assert_allclose(sd._G[:n, :n], D @ D.T, atol=1e-5)
    codes = sd.transform(X[:64], dense=False)
    # the same codes as scikit-learn's OMP on the decoded atoms
    from sklearn.linear_model import orthogonal_mp
    want = orthogonal_mp(D.T.astype(np.float64), X[:64].T.astype(np.float64),
                         n_nonzero_coefs=6).T
    np.testing.assert_allclose(codes.to_dense()[:, :n], want, rtol=1e-3, atol=1e-3)
    rec = sd.reconstruct(codes)
    rel = np.linalg.norm(X[:64] - rec, axis=1) / np.linalg.norm(X[:64], axis=1)
    rel_ref = np.linalg.norm(X[:64] - ref.reconstruct(ref.transform(X[:64])), axis=1) \
        / np.linalg.norm(X[:64], axis=1)
    assert rel.mean() <= rel_ref.mean() + 0.02
    path = tmp_path / "t.npz"
    sd.save(path)
    back = StreamingDictionary.load(path)
    assert back._D.dtype == np.dtype(storage)
    np.testing.assert_array_equal(back.dictionary_, D)
    b = back.transform(X[:64], dense=False)
    np.testing.assert_array_equal(b.indices, codes.indices)
    np.testing.assert_array_equal(b.values, codes.values)


def test_bad_dictionary_dtype_is_refused_before_any_state():
    sd = StreamingDictionary(l=4, dictionary_dtype="int4")
    with pytest.raises(ValueError, match="dictionary_dtype must be one of .*int4"):
        sd.fit(np.ones((5, 3), np.float32))
    assert not hasattr(sd, "n_atoms_")


@pytest.mark.parametrize("storage", ["float16", "int8"])
def test_stored_dictionary_stream_is_the_same_however_it_is_cut(storage):
    rng = np.random.default_rng(2)
    X = (rng.standard_normal((300, 10)) @ rng.standard_normal((10, 70))).astype(np.float32)
    whole = StreamingDictionary(l=20, k=4, dictionary_dtype=storage).fit_transform(X)
    sd = StreamingDictionary(l=20, k=4, dictionary_dtype=storage)
    parts = [sd.partial_fit_transform(X[s:s + e]) for s, e in
             zip(range(0, 300, 37), [37] * 9)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    rows = StreamingDictionary(l=20, k=4, dictionary_dtype=storage)
    singles = np.concatenate([rows.partial_fit_transform(X[i:i + 1]) for i in range(60)])
    np.testing.assert_array_equal(singles, whole[:60])
