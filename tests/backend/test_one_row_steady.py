"""partial_fit of one row once the dictionary is full (``StreamingDictionary._one``: the
runner's ``steady_row``, one bound kernel call): the same state and codes as batch feeding,
the checked path for anything it does not take, nothing changed by a refused row."""
from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from tinydl.transform import StreamingDictionary


@pytest.fixture(params=["native", "blas", "numpy"])
def backend(request, require_backend):
    """native: the stream kernel's ``stream1``; blas: the execution kernels' ``encode1``
    (hal.execution's rule); numpy: no one-row call (the checked runner)."""
    if request.param != "numpy":
        require_backend(request.param)
        require_backend("native")  # blas: its one-row call is the native kernels'
    return request.param


def _rows(seed=0, n=260, m=24, rank=8, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, m))
    return (X + 0.3 * rng.standard_normal((n, m)) + 1.0).astype(dtype)


def _full(backend, X, **kw):
    kw = dict(dict(l=10, k=4, alpha=0.3, backend=backend), **kw)
    sd = StreamingDictionary(**kw).partial_fit(X[:120])
    assert sd.n_atoms_ == 10  # the steady state: nothing can join
    return sd, kw


def _state(sd):
    return [a.copy() for a in (sd._D, sd._G, sd._Li)]


def _same_state(a, b):
    return all(np.array_equal(x.view(np.uint8), y.view(np.uint8)) for x, y in zip(a, b))


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_row_calls_are_the_batch(backend, standardize, dtype):
    """Rows fed one at a time in the steady state: the batch stream's state bits and count,
    and each row's codes (the one-row call's scratch) are the batch's codes of that row."""
    X = _rows(dtype=dtype)
    kw = dict(standardize=standardize, n_standardize=30)
    one, kw = _full(backend, X, **kw)
    batch = StreamingDictionary(**kw).partial_fit(X[:120])
    want = batch.partial_fit_transform(X[120:], dense=False)
    row = None
    for i in range(120, 260):
        assert one.partial_fit(X[i:i + 1]) is one
        if backend == "numpy":
            continue
        if row is None:  # bound once the stream is full (after the first one-row call)
            row = one._fast[3].steady_row()
            continue
        assert row(X[i:i + 1])  # the bound call's codes: what the stream computed for it
        idx, val = row.codes
        assert np.array_equal(idx[0], want.indices[i - 120])
        assert np.array_equal(val[0], want.values[i - 120])
    bound = one.__dict__.get("_one")
    assert getattr(bound, "__name__", None) == ("_never" if backend == "numpy" else "one")
    assert one.n_samples_seen_ == batch.n_samples_seen_ == 260
    assert _same_state(_state(one), _state(batch))
    got = one.partial_fit_transform(X[:5], dense=False)
    ref = batch.partial_fit_transform(X[:5], dense=False)
    assert np.array_equal(got.indices, ref.indices) and np.array_equal(got.values, ref.values)


def test_rows_the_one_row_call_does_not_take_go_the_checked_way(backend):
    """Another dtype, a non-contiguous row, a list: converted by the checked path (the same
    count and state); a 1-D row, a wrong width: its error; NaN / Inf: refused, nothing
    changed, and the one-row call goes on after it."""
    X = _rows(1)
    sd, kw = _full(backend, X)
    sd.partial_fit(X[120:121])
    assert sd.__dict__.get("_one") is not None
    state, seen = _state(sd), sd.n_samples_seen_
    wide = np.asfortranarray(X[121:123])[:1]
    assert not wide.flags.c_contiguous
    for row in (X[121:122].astype(np.float64), wide, X[121:122].tolist()):
        sd.partial_fit(row)
    assert sd.n_samples_seen_ == seen + 3
    for bad, err in ((X[121], "2D|2-D|dimension"), (X[121:122, :-1], "features")):
        with pytest.raises(ValueError, match=err):
            sd.partial_fit(bad)
    for v in (np.nan, np.inf):
        bad = X[122:123].copy()
        bad[0, 5] = v
        with pytest.raises(ValueError, match=r"NaN or Inf.*\(0, 5\)"):
            sd.partial_fit(bad)
    assert sd.n_samples_seen_ == seen + 3 and _same_state(_state(sd), state)
    sd.partial_fit(X[123:124])
    assert sd.n_samples_seen_ == seen + 4


def test_a_changed_parameter_takes_the_checked_path(backend):
    """set_params between one-row calls: a bad value raises with nothing changed; a good one
    (k) is followed, the one-row call bound again for it."""
    X = _rows(2)
    sd, kw = _full(backend, X)
    sd.partial_fit(X[120:121])
    state, seen = _state(sd), sd.n_samples_seen_
    for bad in ({"alpha": -1.0}, {"k": 0}, {"dtype": "int8"}):
        sd.partial_fit(X[121:122])  # (bound again)
        seen += 1
        name, value = next(iter(bad.items()))
        good = sd.get_params()[name]
        for how in ("set_params", "assigned"):
            if how == "set_params":
                sd.set_params(**bad)
            else:
                setattr(sd, name, value)
            assert "_one" not in sd.__dict__  # a parameter set drops the one-row call
            with pytest.raises((ValueError, TypeError), match=name):
                sd.partial_fit(X[122:123])
            assert sd.n_samples_seen_ == seen and _same_state(_state(sd), state)
            sd.set_params(**{name: good})
    sd.set_params(alpha=0.3, k=2)
    ref = StreamingDictionary(**dict(kw, k=2)).partial_fit(X[:120]).partial_fit(X[120:121])
    ref.partial_fit(np.repeat(X[121:122], 3, axis=0))  # the rows fed above
    for i in range(121, 140):
        sd.partial_fit(X[i:i + 1])
    ref.partial_fit(X[121:140])
    assert sd.n_samples_seen_ == ref.n_samples_seen_ == 143
    if backend != "numpy":
        assert sd._one.__name__ == "one"
        row = sd._fast[3].steady_row()
        assert row(X[140:141]) and np.count_nonzero(row.codes[0] >= 0) == 2
    got = sd.partial_fit_transform(X[140:143], dense=False)
    want = ref.partial_fit_transform(X[140:143], dense=False)
    assert np.array_equal(got.indices, want.indices) and np.array_equal(got.values, want.values)


def test_copies_bind_their_own_one_row_call(backend):
    """The bound call is scratch: not pickled, not shared by a copy (which binds its own on
    its first one-row call and leaves the original's count alone)."""
    X = _rows(3)
    sd, _ = _full(backend, X)
    sd.partial_fit(X[120:121])
    assert "_one" not in sd.__getstate__()
    for other in (copy.deepcopy(sd), pickle.loads(pickle.dumps(sd))):
        seen = sd.n_samples_seen_
        for i in range(121, 126):
            other.partial_fit(X[i:i + 1])
        assert other.n_samples_seen_ == seen + 5 and sd.n_samples_seen_ == seen
        assert _same_state(_state(other), _state(sd))


def test_one_row_transform_into_is_transform_and_refuses_what_it_did(backend):
    """transform_into of one row (one bound kernel call where the plan offers it): the codes
    of transform, bit for bit; anything not asked for raises as on the checked path, with
    nothing written."""
    X = _rows(4)
    sd, _ = _full(backend, X, standardize=True, n_standardize=40, alpha=0.2)
    ref = sd.transform(X[120:180], dense=False)
    idx, val = np.full((1, 4), 9, np.int32), np.full((1, 4), 9.0, np.float32)
    for i in range(60):
        sd.transform_into(X[120 + i:121 + i], idx, val)
        assert np.array_equal(idx[0], ref.indices[i]) and np.array_equal(val[0], ref.values[i])
    assert (sd._into[7] is None) == (backend == "numpy")
    x = X[200:201].copy()
    idx[:], val[:] = 9, 9.0
    ro = val.copy()
    ro.flags.writeable = False
    nan = x.copy()
    nan[0, 2] = np.nan
    for a, i, v, msg in (
            (x.astype(np.float64), idx, val, r"X must be .*float32.*float64"),
            (np.asfortranarray(X[200:202])[:1], idx, val, r"C-contiguous"),
            (x, idx.astype(np.int64), val, r"indices .*int32"),
            (x, np.full((2, 4), 9, np.int32)[:1, ::-1], val, r"indices .*C-contiguous"),
            (x, idx, ro, r"values .*writeable"),
            (x, idx, val[:, :3], r"values .*\(1, 4\)"),
            (nan, idx, val, r"NaN or Inf .*\(0, 2\)")):
        with pytest.raises(ValueError, match=msg):
            sd.transform_into(a, i, v)
        assert (idx == 9).all() and (val == 9).all()


def test_binding_happens_before_the_row_changes_anything(backend, monkeypatch):
    """The one-row call is bound on the first one-row call of the steady state, before that
    row is counted: a failure to bind raises with nothing changed, and the next call binds."""
    X = _rows(5)
    sd, _ = _full(backend, X)
    run = sd._fast[3]

    def broken():
        raise MemoryError("no room for the one-row call")
    monkeypatch.setattr(run, "steady_row", broken)
    seen, state = sd.n_samples_seen_, _state(sd)
    with pytest.raises(MemoryError):
        sd.partial_fit(X[120:121])
    assert sd.n_samples_seen_ == seen and _same_state(_state(sd), state)
    monkeypatch.undo()
    sd.partial_fit(X[120:121])
    assert sd.n_samples_seen_ == seen + 1
    assert sd._one.__name__ == ("_never" if backend == "numpy" else "one")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_non_finite_rows_and_overflowing_rows_as_the_batch(backend):
    """A NaN or Inf anywhere in the row (the first feature, the last) is refused with
    nothing changed; a finite row whose |x|^2 overflows is not refused, and its codes are
    those of the same row in a batch."""
    X = _rows(6)
    sd, kw = _full(backend, X)
    sd.partial_fit(X[120:121])
    seen = sd.n_samples_seen_
    for t, v in ((0, np.nan), (23, np.inf), (11, -np.inf)):
        bad = X[121:122].copy()
        bad[0, t] = v
        with pytest.raises(ValueError, match=rf"NaN or Inf.*\(0, {t}\)"):
            sd.partial_fit(bad)
    assert sd.n_samples_seen_ == seen
    big = np.full((1, 24), 3e19, np.float32)  # |x|^2 = 24 * 9e38: inf in float32
    idx, val = np.full((1, 4), 9, np.int32), np.full((1, 4), 9.0, np.float32)
    sd.partial_fit(big)
    sd.transform_into(big, idx, val)
    ref = sd.transform(np.repeat(big, 2, axis=0), dense=False)
    assert np.array_equal(idx[0], ref.indices[0], equal_nan=False)
    assert np.array_equal(val[0], ref.values[0], equal_nan=True)
    assert sd.n_samples_seen_ == seen + 1
