"""The transform's allocation-free execution path (``transform_into``) and one-row streaming:
the same bits as the batched calls, whatever the split."""
from __future__ import annotations

import numpy as np
import pytest

from tinydl.transform import NotFittedError, StreamingDictionary

# every test once on the NumPy backend and once on the native one (see tests/conftest.py)
pytestmark = pytest.mark.usefixtures("each_omp_backend")


def _stream(seed, n=300, m=40, rank=12, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, m))
    X += 0.3 * rng.standard_normal((n, m))
    return (X + 2.0).astype(dtype)


def _same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(
        a.view(np.uint8), b.view(np.uint8))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("standardize", [False, True])
def test_transform_into_matches_transform_bit_for_bit(dtype, standardize):
    X = _stream(0, dtype=dtype)
    sd = StreamingDictionary(l=30, k=5, alpha=0.4, standardize=standardize,
                             n_standardize=50).fit(X[:200])
    ref = sd.transform(X[200:], dense=False)
    kc = min(sd.k, sd.l)
    idx = np.full((100, kc), 7, np.int32)      # garbage: every entry must be written
    val = np.full((100, kc), 3.0, dtype)
    sd.transform_into(np.ascontiguousarray(X[200:]), idx, val)
    assert _same_bits(idx, ref.indices) and _same_bits(val, ref.values)
    # one row at a time, into the same buffers again and again
    i1, v1 = np.empty((1, kc), np.int32), np.empty((1, kc), dtype)
    for r in range(200, 300, 7):
        sd.transform_into(X[r:r + 1].copy(), i1, v1)
        assert _same_bits(i1[0], ref.indices[r - 200]) and _same_bits(v1[0], ref.values[r - 200])


def test_transform_into_follows_k_and_a_growing_dictionary():
    X = _stream(1)
    sd = StreamingDictionary(l=40, k=6, alpha=0.5).partial_fit(X[:30])
    idx, val = np.empty((1, 6), np.int32), np.empty((1, 6), np.float32)
    x = X[-1:].copy()
    sd.transform_into(x, idx, val)
    sd.partial_fit(X[30:200])        # atoms join: the prepared state follows
    sd.transform_into(x, idx, val)
    ref = sd.transform(x, dense=False)
    assert _same_bits(idx, ref.indices) and _same_bits(val, ref.values)
    sd.set_params(k=3)               # kc = 3 now: the outputs' width follows
    i3, v3 = np.empty((1, 3), np.int32), np.empty((1, 3), np.float32)
    sd.transform_into(x, i3, v3)
    ref = sd.transform(x, dense=False)
    assert _same_bits(i3, ref.indices) and _same_bits(v3, ref.values)
    with pytest.raises(ValueError, match=r"indices .* shape \(1, 3\)"):
        sd.transform_into(x, idx, val)


def test_transform_into_rejects_bad_arrays_without_writing():
    X = _stream(2)
    sd = StreamingDictionary(l=20, k=4).fit(X)
    idx, val = np.full((2, 4), 9, np.int32), np.full((2, 4), 9.0, np.float32)
    good = X[:2].copy()
    bad_cases = [
        (good.astype(np.float64), idx, val, r"X must be .*float32.*got .*float64"),
        (np.asfortranarray(X[:2, :]), idx, val, r"C-contiguous"),
        (X[:2, :-1].copy(), idx, val, r"\(n >= 1, 40\).*\(2, 39\)"),
        (good[:1], idx, val, r"indices .*\(1, 4\).*\(2, 4\)"),
        (good, idx.astype(np.int64), val, r"indices .*int32"),
        (good, idx, val.astype(np.float64), r"values .*float32"),
        (good, idx, np.full((2, 4), 9.0, np.float32)[:, ::-1], r"values .*C-contiguous"),
        (list(good), idx, val, r"got list"),
    ]
    for x, i, v, msg in bad_cases:
        with pytest.raises(ValueError, match=msg):
            sd.transform_into(x, i, v)
    nan = good.copy()
    nan[1, 3] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN or Inf .* \(1, 3\)"):
        sd.transform_into(nan, idx, val)
    assert (idx == 9).all() and (val == 9).all()


def test_transform_into_not_fitted():
    idx, val = np.empty((1, 4), np.int32), np.empty((1, 4), np.float32)
    with pytest.raises(NotFittedError):
        StreamingDictionary(k=4).transform_into(np.zeros((1, 5), np.float32), idx, val)
    sd = StreamingDictionary(k=4, standardize=True, n_standardize=10)
    sd.partial_fit(_stream(3)[:5])
    with pytest.raises(NotFittedError, match="5 of n_standardize=10"):
        sd.transform_into(np.zeros((1, 40), np.float32), idx, val)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("standardize", [False, True])
def test_partial_fit_one_row_at_a_time_is_bit_identical_to_one_batch(dtype, standardize):
    """A stream fed a row at a time (the bound one-call path once the statistics are fixed)
    ends with the same dictionary bits and gives the same codes as the same rows in one
    batch, the fill phase included."""
    X = _stream(4, n=160, dtype=dtype)
    kw = dict(l=25, k=4, alpha=0.35, standardize=standardize, n_standardize=20)
    whole = StreamingDictionary(**kw)
    ref = whole.partial_fit_transform(X)
    rows = StreamingDictionary(**kw)
    rows.partial_fit(X[:20])            # the statistics are fixed by the first 20 rows
    got = [rows.partial_fit_transform(X[i:i + 1]) for i in range(20, 100)]
    for i in range(100, 160):           # and without codes
        rows.partial_fit(X[i:i + 1])
    assert rows._fast is not None       # the one-call path ran
    assert rows.n_atoms_ == whole.n_atoms_ > 5
    assert rows.n_samples_seen_ == whole.n_samples_seen_ == 160
    for name in ("_D", "_G", "_Li"):
        assert _same_bits(getattr(rows, name), getattr(whole, name)), name
    assert _same_bits(np.concatenate(got), ref[20:100])
    assert _same_bits(rows.transform(X[:7]), whole.transform(X[:7]))


def test_one_row_path_refuses_bad_rows_and_follows_parameters():
    X = _stream(5, n=80)
    sd = StreamingDictionary(l=30, k=4, alpha=0.35).partial_fit(X[:40])
    before = {name: getattr(sd, name).copy() for name in ("_D", "_G", "_Li")}
    seen, atoms = sd.n_samples_seen_, sd.n_atoms_
    bad = X[40:41].copy()
    bad[0, 7] = np.inf
    with pytest.raises(ValueError, match=r"NaN or Inf .*\(0, 7\)"):
        sd.partial_fit(bad)
    assert (sd.n_samples_seen_, sd.n_atoms_) == (seen, atoms)
    for name, a in before.items():
        assert np.array_equal(getattr(sd, name), a)
    # a parameter changed between rows: the next row takes the checked path with it
    ref = StreamingDictionary(l=30, k=4, alpha=0.35).partial_fit(X[:40])
    sd.set_params(k=2)
    ref.set_params(k=2)
    c1 = sd.partial_fit_transform(X[40:41])
    assert c1.shape == (1, 30) and np.count_nonzero(c1) <= 2
    assert _same_bits(c1, ref.partial_fit_transform(X[40:41]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_row_partial_fit_through_the_fill_phase_is_the_batch(dtype):
    """partial_fit a row at a time (codes nobody reads: the runner's lean call) while atoms
    join: the dictionary's bits, atom for atom, are those of the same rows in one batch."""
    X = _stream(6, n=220, m=30, rank=25, dtype=dtype)
    kw = dict(l=40, k=5, alpha=0.15)
    whole = StreamingDictionary(**kw).partial_fit(X[:20]).partial_fit(X[20:])
    rows = StreamingDictionary(**kw).partial_fit(X[:20])
    start = rows.n_atoms_
    joined = 0
    for i in range(20, 220):
        n0 = rows.n_atoms_
        rows.partial_fit(X[i:i + 1])
        joined += rows.n_atoms_ > n0
    assert rows._fast is not None and joined >= 5 and rows.n_atoms_ > start
    assert rows.n_atoms_ == whole.n_atoms_ and rows.n_samples_seen_ == 220
    for name in ("_D", "_G", "_Li"):
        assert _same_bits(getattr(rows, name), getattr(whole, name)), name


def test_transform_keeps_its_prepared_call_and_follows_every_change(tmp_path):
    # transform prepares its call once (the checks and the plan of transform_into) and
    # keeps it without changing __dict__; a change of the state or of a parameter prepares
    # it again: each call gives the bits a fresh copy of the state gives on its first call
    X = _stream(2)
    sd = StreamingDictionary(l=40, k=6, alpha=0.5, standardize=True,
                             n_standardize=20).partial_fit(X[:30])
    x, x1 = X[-3:].copy(), X[-1:].copy()

    def fresh_codes():
        path = tmp_path / "sd.npz"
        sd.save(path)
        return StreamingDictionary.load(path, backend=sd.backend).transform(x, dense=False)

    before = dict(sd.__dict__)
    sd.transform(x)
    assert sd.__dict__ == before and all(sd.__dict__[k] is v for k, v in before.items())
    for change in (None, lambda: sd.partial_fit(X[30:200]), lambda: sd.set_params(k=3),
                   lambda: sd.set_params(tol=0.5), lambda: sd.partial_fit(X[200:201])):
        if change is not None:
            change()
        for _ in range(2):  # prepared, then kept
            got, one = sd.transform(x, dense=False), sd.transform(x1, dense=False)
            ref = fresh_codes()
            assert _same_bits(got.indices, ref.indices) and _same_bits(got.values, ref.values)
            assert _same_bits(one.indices, ref.indices[-1:])
            assert _same_bits(one.values, ref.values[-1:])
    # a bad parameter set after the call was kept is still named by transform
    sd.set_params(k=0)
    with pytest.raises(ValueError, match="k"):
        sd.transform(x)
    sd.set_params(k=3, alpha=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        sd.transform(x)
