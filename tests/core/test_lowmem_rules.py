"""The small-memory rules of issue 18: standardization by the spread of the features' ranges,
the window policy resolved from the stream's order, the hidden-layer floor in the ranking, the
stored dictionary decoded one atom at a time, and the stored OMP's padding of codes that stop
early."""
import numpy as np
import pytest

from tinydl.customize import SCALE_SPREAD, plan, scaling_rule
from tinydl.data import label_runs
from tinydl.plan import HIDDEN_PER_CLASS


def test_scaling_rule_standardizes_features_on_different_scales_only():
    rng = np.random.default_rng(0)
    # features in three "units", ranges 1, 10 and 100: spread 100x > SCALE_SPREAD
    units = rng.standard_normal((500, 30)) * np.repeat([1.0, 10.0, 100.0], 10)
    r = scaling_rule(units)
    assert r["standardize"] and r["spread"] > SCALE_SPREAD
    # one unit, mostly "absent" (zero), the signal in [0.2, 1]: the ranges barely spread
    sparse = np.where(rng.random((500, 30)) < 0.05, rng.uniform(0.2, 1.0, (500, 30)), 0.0)
    r = scaling_rule(sparse)
    assert not r["standardize"] and 1.0 <= r["spread"] <= SCALE_SPREAD
    assert "no standardization" in r["rule"]
    # constant features do not count; fewer than two varying features: no spread to measure
    flat = np.ones((10, 4))
    flat[:, 0] = np.arange(10)
    assert scaling_rule(flat)["spread"] == 0.0


def test_plan_without_standardization_prices_no_statistics():
    small = dict(l_choices=(16, 32), k_choices=(5,), window_choices=(256,),
                 hidden_choices=((32,),))
    on = plan(520, 13, "x86-64-host", memory_bytes=512 * 1024, **small)
    off = plan(520, 13, "x86-64-host", memory_bytes=512 * 1024, standardize=False, **small)
    assert on.standardize in ("hold", "running") and off.standardize == "off"
    names = {b["name"] for b in off.buffers}
    assert not any(n.startswith("standardizer") or n.startswith("stats.") for n in names)
    assert off.learner_params()["standardize"] is False
    assert off.footprint_bytes <= 512 * 1024


def test_window_policy_auto_follows_the_stream_order(tmp_path):
    from tinydl.plan import load_plan
    p = plan(520, 13, "x86-64-host", memory_bytes=1024 * 1024, l_choices=(16,),
             k_choices=(5,), window_choices=(256,), hidden_choices=((32,),))
    assert p.window_policy == "auto"
    assert p.learner_params(blocked=False)["window_policy"] == "sliding"
    assert p.learner_params(blocked=True)["window_policy"] == "reservoir"
    assert p.learner_params()["window_policy"] == "reservoir"  # order unknown
    p.save(tmp_path / "p.json")
    assert load_plan(tmp_path / "p.json").window_policy == "auto"
    # the rule's input: labels in blocks against the same labels shuffled
    y = np.repeat(np.arange(13), 50)
    assert label_runs(y, p.n_batch)["blocked"]
    assert not label_runs(np.random.default_rng(0).permutation(y), p.n_batch)["blocked"]


def test_ranking_takes_a_hidden_layer_of_its_units_per_class_before_atoms():
    import dataclasses

    from tinydl.plan import _rank_key
    p = plan(600, 19, "x86-64-host", memory_bytes=64 * 2 ** 20, l_choices=(16,),
             k_choices=(5,), window_choices=(512,), hidden_choices=((16,),),
             dictionary_dtype="float32", standardize=False)
    base = p.candidates[0]

    def cand(l, h):
        sizes = (l, h, 19)
        return dataclasses.replace(base, l=l, hidden_layer_sizes=(h,), n_params=sum(
            a * b + b for a, b in zip(sizes[:-1], sizes[1:])))
    floor = HIDDEN_PER_CLASS * 19
    narrow_more_atoms, wide_fewer_atoms = cand(32, floor // 2), cand(16, floor)
    at_floor, beyond_fewer_atoms, beyond = cand(32, floor), cand(16, 2 * floor), cand(32, 2 * floor)
    key = _rank_key(False, 19)
    # below the floor (HIDDEN_PER_CLASS x 19 units) a wider layer wins over more atoms ...
    assert min([narrow_more_atoms, wide_fewer_atoms], key=key) is wide_fewer_atoms
    # ... past it, atoms win, then the wider network
    assert min([beyond_fewer_atoms, at_floor], key=key) is at_floor
    assert min([at_floor, beyond], key=key) is beyond


def test_ranking_takes_a_second_hidden_layer_before_atoms_not_before_the_floors():
    import dataclasses

    from tinydl.customize import _n_params
    from tinydl.plan import DEPTH_FLOOR, K_FLOOR, _rank_key
    assert DEPTH_FLOOR == 2
    p = plan(600, 19, "x86-64-host", memory_bytes=64 * 2 ** 20, l_choices=(16,),
             k_choices=(5,), window_choices=(512,), hidden_choices=((16,),),
             dictionary_dtype="float32", standardize=False)
    base = p.candidates[0]

    def cand(l, hidden, k=K_FLOOR):
        return dataclasses.replace(base, l=l, k=k, hidden_layer_sizes=tuple(hidden),
                                   n_params=_n_params((l, *hidden, 19)))
    floor = HIDDEN_PER_CLASS * 19
    key = _rank_key(False, 19)
    deep, wide_more_atoms = cand(64, (floor, floor // 2)), cand(80, (floor,))
    # past the width floor and K_FLOOR, a second layer wins over more atoms ...
    assert min([wide_more_atoms, deep], key=key) is deep
    # ... a third does not count beyond DEPTH_FLOOR: then atoms
    deeper = cand(64, (floor, floor // 2, floor // 4))
    assert min([deeper, cand(80, (floor, floor // 2))], key=key).l == 80
    # ... but not at the expense of the width floor or of K_FLOOR non-zeros
    assert min([cand(80, (floor // 2, floor // 4)), cand(64, (floor,))],
               key=key).hidden_layer_sizes == (floor,)
    assert min([cand(80, (floor, floor // 2), k=K_FLOOR // 2), cand(64, (floor,))],
               key=key).k == K_FLOOR


@pytest.mark.parametrize("storage", ["float16", "int8"])
def test_decoding_one_atom_at_a_time_gives_the_same_codes(storage):
    from tinydl.lowmem import plan_backend
    from tinydl.transform import StreamingDictionary
    rng = np.random.default_rng(2)
    X = (rng.standard_normal((300, 10)) @ rng.standard_normal((10, 80))).astype(np.float32)
    X += 0.05 * rng.standard_normal(X.shape).astype(np.float32)
    ref = StreamingDictionary(l=24, k=5, alpha=0.3, dictionary_dtype=storage,
                              backend="numpy").fit(X)
    be = plan_backend("numpy", 64, True, 1)
    assert be.stored_tile_rows == 1
    one = StreamingDictionary(l=24, k=5, alpha=0.3, dictionary_dtype=storage,
                              backend=be).fit(X)
    assert one.n_atoms_ == ref.n_atoms_
    np.testing.assert_allclose(one.dictionary_, ref.dictionary_, atol=1e-6)
    a, b = one.transform(X[:50], dense=True), ref.transform(X[:50], dense=True)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # the plan prices one decoded atom, not 16
    p = plan(80, 4, "x86-64-host", memory_bytes=64 * 2 ** 20, dictionary_dtype=storage,
             l_choices=(24,), k_choices=(5,), window_choices=(128,), hidden_choices=((16,),))
    dec = [b for b in p.buffers if b["name"] == "transform.decode"]
    assert dec and dec[0]["shape"][0] == min(p.decode_rows, max(p.l, 2))


def test_stored_codes_that_stop_early_are_padded():
    # a rank-deficient stored dictionary (duplicate atoms): OMP stops before k non-zeros and
    # the rest of each code is -1 / 0 even in an uninitialized output
    import warnings

    from hal.backends.numpy.stored import StoredBasisWorkspace, decode, quantize
    be = __import__("hal").get_backend("numpy")
    rng = np.random.default_rng(3)
    A = rng.standard_normal((3, 40)).astype(np.float32)
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    A = np.concatenate([A, A])                 # 6 atoms of rank 3
    q, sc = quantize(A, "float16")
    D = decode(q, sc, np.float32)
    G = (D @ D.T).astype(np.float32)
    ws = StoredBasisWorkspace(be, np.ascontiguousarray(q), sc, G,
                              np.eye(6, dtype=np.float32))
    X = rng.standard_normal((20, 40)).astype(np.float32)
    idx = np.full((20, 5), 12345, np.int32)
    val = np.full((20, 5), 7.0, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ws.plan(6, 5).encode(X, idx, val)
    assert ((idx >= -1) & (idx < 6)).all()
    assert (val[idx == -1] == 0).all()


def test_footprint_prices_the_lone_row_pair_only_where_rows_are_coded_alone():
    """A row coded alone is coded as a pair (its concatenation with itself, so that its code
    is bit-identical to any batch's): the plan prices that copy for one-row chunks or one-row
    OMP batches, and not where every OMP batch holds several rows."""
    from tinydl.footprint import plan_buffers
    m = 300
    x = np.ones((1, m), np.float32)
    pair_bytes = np.concatenate([x, x]).nbytes  # what the coding path allocates

    def lone(**kw):
        bufs = plan_buffers(m, 5, 16, 4, (8,), 64, "float32", **kw)
        return [b for b in bufs if b["name"] == "stream.lone pair"]

    for kw in (dict(chunk=1, omp_batch=1), dict(chunk=8, omp_batch=1),
               dict(chunk=9, omp_batch=4)):
        (b,) = lone(**kw)
        assert b["bytes"] == pair_bytes and b["phase"] == "stream", kw
    for kw in (dict(chunk=8, omp_batch=4), dict(chunk=256, omp_batch=256)):
        assert lone(**kw) == [], kw
