"""Weight averaging (``average="ema"``): the network predicts with a moving average of the
weights its updates leave, training continues from the un-averaged ones.  Checked against a
literal NumPy transcription of the blend, through save/load and copies, in the learner's
stream (started once the window has filled, the same bits however the stream is cut), in
the footprint and in the customizer's rule."""
from __future__ import annotations

import copy

import numpy as np
import pytest

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
    assert net.n_averaged_ == 0 and net._stash is None
    np.testing.assert_array_equal(net.network_.params, w)
    np.testing.assert_array_equal(net.training_params_, w)


def test_a_model_copied_before_averaging_existed_still_trains():
    X, y = _data()
    net = _net().partial_fit(X[:80], y[:80], classes=[0, 1, 2])
    old = copy.deepcopy(net)
    for key in ("n_averaged_", "_stash"):  # what a copy made by an older tinydl lacks
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
    assert names["network.average"] == 2 * n_params
    assert "network.average" not in {b["name"] for b in short.buffers}
    assert long_.footprint_bytes == short.footprint_bytes + 2 * n_params
    assert "weights averaged" in long_.reason
    # the learner gets it on a sliding window only
    assert long_.learner_params(blocked=False)["average"] == "ema"
    assert "average" not in long_.learner_params(blocked=True)
    # never at the cost of capacity: a budget that holds l=32 without the average, not with
    # it, gets l=32 without it (not l=16 with it)
    big = _plan(memory_bytes=8 << 20, n_samples=10 ** 6, l_choices=(16, 32))
    assert big.l == 32 and big.average == "ema"
    n32 = 32 * 16 + 16 + 16 * 4 + 4
    tight = _plan(memory_bytes=big.footprint_bytes - 2 * n32 + 1, n_samples=10 ** 6,
                  l_choices=(16, 32))
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
