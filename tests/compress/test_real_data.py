"""On a slice of real data (UJIIndoorLoc): one preparation path for every split, and the
compiler's promises (budget on validation, runtime peak) on a small real network."""
import numpy as np
import pytest

from tinydl.compress import SparseRuntime, compress_model, from_network, save_model
from tinydl.compress.compiler import wilson_upper
from tinydl.nn import MLPClassifier


def test_wilson_upper_limit():
    # literal transcription of the Wilson score interval's upper end
    for rate, n, z in ((0.0, 228, 1.0), (0.05, 228, 1.0), (0.3, 40, 1.96), (0.01, 3000, 2.0)):
        want = (rate + z * z / (2 * n) + z * np.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n))
                ) / (1 + z * z / n)
        assert wilson_upper(rate, n, z) == pytest.approx(want)
        assert wilson_upper(rate, n, z) > rate
    assert wilson_upper(0.0, 228, 1.0) == pytest.approx(1 / 229)


def test_one_preparation_path_and_budget(shared_data, tmp_path):
    from benchmarks._compress_nets import Prepared, protocol_splits
    from tinydl.reproduce.protocol import Settings
    from tinydl.standardize import fit_stats
    path = shared_data / "ujiindoorloc.npz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    S, classes, app = protocol_splits(str(path), Settings())
    assert app == "indoor-localization"
    # features in [0, 1] for both splits: the same RSSI mapping reached the test split
    assert 0 <= S["Xte"].min() and S["Xte"].max() <= 1 and S["X"].max() <= 1
    prep = Prepared(*fit_stats(S["X"][:256], np.float32))
    rng = np.random.default_rng(0)
    fit = rng.choice(len(S["X"]), 3000, replace=False)
    val = rng.choice(len(S["Xval"]), 600, replace=False)
    Xtr, Xv, Xt = prep(S["X"][fit]), prep(S["Xval"][val]), prep(S["Xte"])
    # the one path is the literal standardization for every split
    np.testing.assert_allclose(Xt[:5], (S["Xte"][:5] - prep.mean) / prep.scale, rtol=1e-6)
    clf = MLPClassifier((32,), epochs=8, seed=0, loss="cross_entropy", optimizer="adam",
                        learning_rate=3e-3, batch_size=64).fit(Xtr, S["y"][fit])
    model = from_network(clf)
    acc_val, acc_test = model.score(Xv, S["yval"][val]), model.score(Xt, S["yte"])
    # validation and test prepared alike: no collapse on test (the old path scored 43.7%)
    assert acc_test > 0.5 * acc_val + 0.3
    cm, rep = compress_model(model, Xv, S["yval"][val], 0.02, method="auto", quantize="int8",
                             X_fit=Xtr, confidence=1.0, n_iter=2)
    assert wilson_upper(rep.val_lost, len(val), 1.0) <= 0.02 + 1e-9
    assert rep.memory_reduction > 4
    save_model(cm, tmp_path / "uji.npz")
    rt = SparseRuntime(tmp_path / "uji.npz")
    for b in (1, 64):
        rt.run(Xt[:b], measure=True)
        pred = rt.predict_peak_bytes(b)
        assert abs(rt.last_peak_bytes - pred) <= 0.15 * pred, (b, pred, rt.last_peak_bytes)


def test_validation_mask_floor_and_protocol_rows():
    """The benchmark's validation hold-out: 15% of a class, at least the floor (leaving two
    rows to the stream); a class above the floor keeps exactly the protocol's rows."""
    from benchmarks._compress_nets import split_digest, validation_mask
    from tinydl.reproduce.protocol import _holdout
    y = np.repeat(np.arange(4), [77, 300, 21, 2])
    rng = np.random.default_rng(3)
    y = y[rng.permutation(len(y))]
    mask = validation_mask(y, 0.15, 0, min_per_class=20)
    counts = [int(mask[y == c].sum()) for c in range(4)]
    assert counts == [20, 45, 19, 0]
    proto = _holdout(y, 0.15, 0)
    np.testing.assert_array_equal(mask[y == 1], proto[y == 1])
    # the floor only adds rows: the protocol's rows of every class are kept
    assert not (proto & ~mask).any()
    assert split_digest(np.flatnonzero(mask)) != split_digest(np.flatnonzero(proto))


def test_split_gap_flags_a_shift_beyond_three_standard_errors():
    """benchmarks.compress.split_gap: the raw model's validation - test accuracy and whether it
    exceeds SHIFT_Z standard errors of the difference of two independent proportions (the
    textbook unpooled form, written out here)."""
    import math

    from benchmarks.compress import SHIFT_Z, split_gap
    for a, n, b, m in ((0.9953, 2989, 0.9145, 1111), (0.9132, 380, 0.9224, 361)):
        gap, shifted = split_gap(a, n, b, m)
        se = math.sqrt(a * (1 - a) / n + b * (1 - b) / m)
        assert gap == pytest.approx(a - b)
        assert shifted == (abs(a - b) > SHIFT_Z * se)
    assert split_gap(0.9953, 2989, 0.9145, 1111)[1]        # UJIIndoorLoc's campaigns
    assert not split_gap(0.9132, 380, 0.9224, 361)[1]      # Daily and Sports' random split
