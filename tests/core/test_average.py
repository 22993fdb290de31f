"""Weight averaging (``average="ema"``): the network predicts with a moving average of the
weights its updates leave, training continues from the un-averaged ones.  Checked against a
literal NumPy transcription of the blend, through save/load and copies, in the learner's
stream (started once the window has filled, the same bits however the stream is cut), in
the footprint and in the customizer's rule."""
from __future__ import annotations

import copy

import numpy as np
import pytest

import hal
from tinydl.learner import AVERAGE_MAX, TinyDLClassifier, average_beta
from tinydl.nn.classifier import MLPClassifier


def _data(n=240, m=12, c=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((c, m)) * 3
    y = rng.integers(0, c, n)
    X = (centers[y] + rng.standard_normal((n, m))).astype(np.float32)
    return X, y


def _net():
    return MLPClassifier(hidden_layer_sizes=(16,), optimizer="adafactor", batch_size=16,
                         seed=3)


def _reference_blend(a, w, beta):
    """The blend as the docstring states it: A = beta * float16(A) + (1 - beta) * W,
    elementwise in float32."""
    a = a.astype(np.float16).astype(np.float32)
    return (a * np.float32(beta) + w * np.float32(1.0 - beta)).astype(np.float32)


def test_average_matches_a_numpy_transcription_and_leaves_training_unchanged():
    X, y = _data()
    avg, plain = _net(), _net()
    ref = None
    betas = [0.0, 0.2, 0.5, 0.9, 0.99]
    for i, beta in enumerate(betas):
        rows = slice(40 * i, 40 * i + 80)
        avg.partial_fit(X[rows], y[rows], classes=[0, 1, 2], epochs=2, average=beta)
        plain.partial_fit(X[rows], y[rows], classes=[0, 1, 2], epochs=2)
        w = plain.network_.params
        ref = w.copy() if ref is None else _reference_blend(ref, w, beta)
        # training continues from the un-averaged weights: the same bits as without
        np.testing.assert_array_equal(avg.training_params_, w)
        np.testing.assert_array_equal(avg.network_.params, ref)
    assert avg.n_averaged_ == len(betas)
    # predictions use the average: a network holding the reference weights agrees
    probe = copy.deepcopy(plain)
    probe.network_.params[...] = ref
    np.testing.assert_array_equal(avg.predict(X), probe.predict(X))
    assert not np.array_equal(avg.network_.params, plain.network_.params)


def _spy_stash(net):
    """Record the float16 views each call lays A's stash over (``[]`` before the average
    has started)."""
    seen, make = [], net._stash_views

    def views(n, scratch):
        seen.append(make(n, scratch))
        return seen[-1]

    net._stash_views = views
    return seen


def test_the_stash_over_lent_scratch_gives_the_same_bits():
    """A's float16 stash laid over arrays a caller lends (its idle workspaces) leaves every
    result as with the model's own stash; the lent arrays hold A while W trains, and the
    model allocates (for the call) only what they cannot hold."""
    X, y = _data()
    own, lent = _net(), _net()
    for i, beta in enumerate([0.0, 0.5, 0.9]):
        rows = slice(40 * i, 40 * i + 80)
        own.partial_fit(X[rows], y[rows], classes=[0, 1, 2], epochs=2, average=beta)
        # 3 float32 arrays: room for 40 float16 values in each of the first two, 32 in
        # the last (112 of the network's 259 parameters)
        scratch = [np.full(20, np.nan, np.float32), np.full((4, 5), np.nan, np.float32),
                   np.full(16, np.nan, np.float32)]
        a_before = lent.network_.params.copy() if i else None
        seen = _spy_stash(lent) if i else []
        lent.partial_fit(X[rows], y[rows], classes=[0, 1, 2], epochs=2, average=beta,
                         scratch=scratch)
        np.testing.assert_array_equal(lent.network_.params, own.network_.params)
        np.testing.assert_array_equal(lent.training_params_, own.training_params_)
        if i:  # A went through the lent arrays, in order, and the rest through its own
            n_params = own.network_.n_params
            held = np.concatenate([a.reshape(-1).view(np.float16) for a in scratch])
            np.testing.assert_array_equal(held, a_before[:112].astype(np.float16))
            (views,) = seen
            assert [v.size for v in views] == [40, 40, 32, n_params - 112]
            assert not any(np.may_share_memory(views[-1], a) for a in scratch)
    # enough lent: nothing of its own
    big = [np.empty(own.network_.n_params // 2 + 1, np.float32)]
    seen = _spy_stash(lent)
    lent.partial_fit(X[:80], y[:80], average=0.9, scratch=big)
    own.partial_fit(X[:80], y[:80], average=0.9)
    assert len(seen[0]) == 1 and np.shares_memory(seen[0][0], big[0])
    np.testing.assert_array_equal(lent.network_.params, own.network_.params)
    np.testing.assert_array_equal(lent.predict(X), own.predict(X))


_SHARED = np.zeros(64, np.float32)


@pytest.mark.parametrize("bad, match", [
    ([np.zeros((8, 8), np.float32)[:, ::2]], "C-contiguous"),
    ([np.zeros(8, np.float32)[::-1]], "C-contiguous"),
    ([[0.0] * 8], "C-contiguous"),
    ([np.empty(8, object)], "C-contiguous"),
    ([_SHARED[:32], _SHARED[16:]], r"scratch\[1\] \(192 bytes\) shares memory with scratch"),
    ("params", "shares memory with the network's own buffers")],
    ids=["strided", "reversed", "list", "objects", "overlapping", "the-network's"])
def test_bad_scratch_is_refused_before_any_state_changes(bad, match):
    X, y = _data()
    net = _net()
    net.partial_fit(X[:80], y[:80], classes=[0, 1, 2], average=0.0)
    net.partial_fit(X[80:160], y[80:160], average=0.5)
    if bad == "params":
        bad = [net.network_.grads[10:50]]
    before = copy.deepcopy(net)
    with pytest.raises(ValueError, match=match):
        net.partial_fit(X[160:], y[160:], average=0.5, scratch=bad)
    np.testing.assert_array_equal(net.network_.params, before.network_.params)
    np.testing.assert_array_equal(net.training_params_, before.training_params_)
    assert net.n_averaged_ == before.n_averaged_ and net.t_ == before.t_


def test_a_call_without_average_keeps_the_average_up_to_float16():
    X, y = _data()
    net = _net()
    net.partial_fit(X[:80], y[:80], classes=[0, 1, 2], average=0.0)
    net.partial_fit(X[80:160], y[80:160], average=0.5)
    a = net.network_.params.copy()
    w = net.training_params_.copy()
    net.partial_fit(X[160:], y[160:])
    np.testing.assert_array_equal(net.network_.params,
                                  a.astype(np.float16).astype(np.float32))
    assert not np.array_equal(net.training_params_, w)  # W trained on


@pytest.mark.parametrize("bad", [1.0, -0.1, "0.5", True, np.True_, float("nan")])
def test_a_bad_average_is_refused_before_any_state_changes(bad):
    X, y = _data()
    net = _net()
    net.partial_fit(X[:80], y[:80], classes=[0, 1, 2], average=0.0)
    before = (net.network_.params.copy(), net.training_params_.copy(), net.t_)
    with pytest.raises(ValueError, match="average must be a number in"):
        net.partial_fit(X[80:], y[80:], average=bad)
    np.testing.assert_array_equal(net.network_.params, before[0])
    np.testing.assert_array_equal(net.training_params_, before[1])
    assert net.t_ == before[2]


def test_save_load_and_copies_keep_both_weights(tmp_path):
    X, y = _data()
    net = _net()
    net.partial_fit(X[:120], y[:120], classes=[0, 1, 2], epochs=2, average=0.0)
    net.partial_fit(X[120:], y[120:], epochs=2, average=0.7)
    net.save(tmp_path / "m.npz")
    back = MLPClassifier.load(tmp_path / "m.npz")
    dup = copy.deepcopy(net)
    for other in (back, dup):
        assert other.n_averaged_ == net.n_averaged_ == 2
        np.testing.assert_array_equal(other.network_.params, net.network_.params)
        np.testing.assert_array_equal(other.training_params_, net.training_params_)
    # and training continues alike from each
    for other in (net, back, dup):
        other.partial_fit(X[:120], y[:120], epochs=1, average=0.9)
    for other in (back, dup):
        np.testing.assert_array_equal(other.network_.params, net.network_.params)
        np.testing.assert_array_equal(other.training_params_, net.training_params_)


def test_numpy_scalars_and_stop_average():
    X, y = _data()
    net = _net()
    net.partial_fit(X[:80], y[:80], classes=[0, 1, 2], average=np.float32(0.0))
    net.partial_fit(X[80:], y[80:], average=np.float64(0.5))
    assert net.n_averaged_ == 2
    w = net.training_params_.copy()
    net.stop_average()
    assert net.n_averaged_ == 0
    np.testing.assert_array_equal(net.network_.params, w)
    np.testing.assert_array_equal(net.training_params_, w)


def test_a_model_copied_before_averaging_existed_still_trains():
    X, y = _data()
    net = _net().partial_fit(X[:80], y[:80], classes=[0, 1, 2])
    old = copy.deepcopy(net)
    for key in ("n_averaged_",):  # what a copy made by an older tinydl lacks
        del old.__dict__[key]
    old.partial_fit(X[80:], y[80:])
    assert old.n_averaged_ == 0
    np.testing.assert_array_equal(old.training_params_, old.network_.params)


def test_average_beta_warms_up_then_caps():
    assert average_beta(2) == pytest.approx(3 / 12)
    assert all(average_beta(t) < average_beta(t + 1) for t in range(2, 300) if
               average_beta(t + 1) < AVERAGE_MAX)
    assert average_beta(10 ** 6) == AVERAGE_MAX


def _learner(**kw):
    base = dict(l=16, k=4, hidden_layer_sizes=(16,), window=64, n_batch=32,
                epochs_per_update=2, standardize=False, optimizer="adafactor",
                learning_rate=1e-2, batch_size=16, window_policy="sliding", rebuild="never",
                seed=1, backend="numpy")
    base.update(kw)
    return TinyDLClassifier(**base)


def test_the_learner_averages_once_the_window_has_filled_and_cuts_do_not_matter():
    X, y = _data(n=320, m=12)
    whole = _learner(average="ema").partial_fit(X, y, classes=[0, 1, 2])
    # updates at 32, 64, ... 320: the average starts at the first one past the window (96)
    assert whole.n_updates_ == 10
    assert whole.network_.n_averaged_ == 10 - 2
    cut = _learner(average="ema")
    for s in range(0, len(X), 7):
        cut.partial_fit(X[s:s + 7], y[s:s + 7], classes=[0, 1, 2])
    np.testing.assert_array_equal(cut.network_.network_.params,
                                  whole.network_.network_.params)
    off = _learner().partial_fit(X, y, classes=[0, 1, 2])
    # the same training weights as without the average; other prediction weights
    np.testing.assert_array_equal(whole.network_.training_params_,
                                  off.network_.network_.params)
    assert not np.array_equal(whole.network_.network_.params, off.network_.network_.params)


@pytest.mark.parametrize("dictionary_dtype", [None, "int8"])
def test_the_learner_lends_its_idle_omp_scratch_and_nothing_else_changes(dictionary_dtype):
    """The learner lays the average's stash over its transform's OMP scratch while the
    network retrains (hal.backend.OMPWorkspace.scratch: written before read on every call).
    Against a learner that lends nothing, and one that fills the lent arrays with NaN first:
    the same dictionary, window codes, weights and predictions, bit for bit (a workspace
    array read before written would carry the stash or the NaN into the codes)."""
    X, y = _data(n=320, m=24)
    kw = dict(l=12, k=4, average="ema", dictionary_dtype=dictionary_dtype)
    lends, keeps, poisoned = _learner(**kw), _learner(**kw), _learner(**kw)
    keeps._lent_scratch = lambda: None
    seen, spies = [], {}

    def poison():
        arrays = poisoned.transform_._idle_scratch()
        for a in arrays:
            a[...] = np.nan
        seen.append(sum(a.nbytes for a in arrays))
        return arrays

    poisoned._lent_scratch = poison
    for lrn in (lends, keeps, poisoned):
        for s in range(0, len(X), 40):
            lrn.partial_fit(X[s:s + 40], y[s:s + 40], classes=[0, 1, 2])
            if s == 0:  # the network exists now (the average starts at sample 96)
                spies[id(lrn)] = _spy_stash(lrn.network_)
    assert lends.network_.n_averaged_ == 8 and min(seen) > 0
    # the stash went over the transform's scratch: the network's own part is the rest
    n_params = lends.network_.network_.n_params
    scratch = lends.transform_._idle_scratch()
    lent = sum(a.nbytes for a in scratch) // 2
    assert len(spies[id(lends)]) == len(spies[id(keeps)]) == 7  # the averaged calls but one
    assert lent >= n_params  # (a numpy backend's 256-row workspace holds it all)
    for views in spies[id(lends)]:
        assert sum(v.size for v in views) == n_params
        assert all(any(np.shares_memory(v, a) for a in scratch) for v in views)
    assert all(len(v) == 1 and v[0].size == n_params for v in spies[id(keeps)])
    for other in (keeps, poisoned):
        np.testing.assert_array_equal(other.transform_.dictionary_,
                                      lends.transform_.dictionary_)
        np.testing.assert_array_equal(other.codes_indices_, lends.codes_indices_)
        np.testing.assert_array_equal(other.codes_values_, lends.codes_values_)
        np.testing.assert_array_equal(other.network_.network_.params,
                                      lends.network_.network_.params)
        np.testing.assert_array_equal(other.network_.training_params_,
                                      lends.network_.training_params_)
        np.testing.assert_array_equal(other.predict(X), lends.predict(X))


def test_average_set_off_mid_stream_predicts_with_the_last_weights_again():
    X, y = _data(n=320, m=12)
    lrn = _learner(average="ema").partial_fit(X[:224], y[:224], classes=[0, 1, 2])
    assert lrn.network_.n_averaged_ > 0
    lrn.set_params(average="off")
    lrn.partial_fit(X[224:], y[224:])
    off = _learner().partial_fit(X, y, classes=[0, 1, 2])
    assert lrn.network_.n_averaged_ == 0
    np.testing.assert_array_equal(lrn.network_.network_.params, off.network_.network_.params)
    np.testing.assert_array_equal(lrn.predict(X), off.predict(X))


def test_a_learner_checkpoint_resumes_the_average(tmp_path):
    X, y = _data(n=320, m=12)
    whole = _learner(average="ema").partial_fit(X, y, classes=[0, 1, 2])
    first = _learner(average="ema").partial_fit(X[:200], y[:200], classes=[0, 1, 2])
    first.save(tmp_path / "ck")
    resumed = TinyDLClassifier.load(tmp_path / "ck", backend="numpy")
    assert resumed.average == "ema"
    resumed.partial_fit(X[200:], y[200:])
    np.testing.assert_array_equal(resumed.network_.network_.params,
                                  whole.network_.network_.params)
    np.testing.assert_array_equal(resumed.predict(X), whole.predict(X))


def test_bad_average_choice_is_refused():
    X, y = _data(n=64)
    with pytest.raises(ValueError, match="average must be one of"):
        _learner(average="swa").partial_fit(X, y, classes=[0, 1, 2])


# -- the customizer's rule --------------------------------------------------------------------
def _plan(**kw):
    from tinydl.customize import plan
    base = dict(m=64, n_classes=4, profile="x86-64-host", backend="numpy",
                l_choices=(16,), k_choices=(4,), window_choices=(128,),
                hidden_choices=((16,),))
    base.update(kw)
    return plan(**base)


def test_the_customizer_averages_a_long_stream_when_the_average_fits():
    from tinydl.customize import AVERAGE_WINDOWS
    long_ = _plan(memory_bytes=8 << 20, n_samples=AVERAGE_WINDOWS * 128)
    short = _plan(memory_bytes=8 << 20, n_samples=AVERAGE_WINDOWS * 128 - 1)
    unknown = _plan(memory_bytes=8 << 20)
    assert (long_.average, short.average, unknown.average) == ("ema", "off", "off")
    names = {b["name"]: b["bytes"] for b in long_.buffers}
    n_params = 16 * 16 + 16 + 16 * 4 + 4
    # the stash lies over the OMP workspace's idle scratch first: its own bytes are what
    # that scratch cannot hold (the arrays of the workspace the plan's backend allocates)
    ws = long_.backend_object()
    ws = hal.get_backend(ws) if isinstance(ws, str) else ws
    lent = sum(a.nbytes for a in ws.prepare_omp(long_.omp_batch, 64, 16, 4,
                                                np.float32).scratch())
    assert names["network.average"] == max(0, 2 * n_params - lent)
    assert "network.average" not in {b["name"] for b in short.buffers}
    assert long_.footprint_bytes == short.footprint_bytes + names["network.average"]
    assert "weights averaged" in long_.reason
    # the learner gets it on a sliding window only
    assert long_.learner_params(blocked=False)["average"] == "ema"
    assert "average" not in long_.learner_params(blocked=True)
    # never at the cost of capacity: a budget that holds l=32 without the average, not with
    # it, gets l=32 without it (not l=16 with it)
    # (a wide network: its stash is more than the OMP scratch holds)
    wide = dict(n_samples=10 ** 6, l_choices=(16, 32), hidden_choices=((4096,),))
    big = _plan(memory_bytes=8 << 20, **wide)
    assert big.l == 32 and big.average == "ema"
    own = {b["name"]: b["bytes"] for b in big.buffers}["network.average"]
    assert own > 0
    tight = _plan(memory_bytes=big.footprint_bytes - own + 1, **wide)
    assert (tight.l, tight.average) == (32, "off")


def test_a_plan_file_with_a_bad_average_is_refused(tmp_path):
    import json

    from tinydl.customize import load_plan
    p = _plan(memory_bytes=8 << 20, n_samples=10 ** 4)
    p.save(tmp_path / "p.json")
    d = json.loads((tmp_path / "p.json").read_text())
    assert d["average"] == "ema"
    assert load_plan(tmp_path / "p.json").average == "ema"
    d["average"] = "swa"
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="plan average must be one of"):
        load_plan(tmp_path / "bad.json")
