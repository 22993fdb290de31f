"""The compiler keeps validation accuracy within the budget; the runtime's peak is predicted."""
import numpy as np
import pytest

from tinydl.compress import (
    BudgetInfeasible,
    SparseRuntime,
    compress_model,
    from_network,
    load_any_model,
    load_model,
    save_model,
)
from tinydl.io import ModelFileError


@pytest.mark.parametrize("method", ["svd", "sparse"])
def test_budget_is_honoured(trained_mlp, digits_split, method):
    _, _, Xv, yv, Xt, yt = digits_split
    model = from_network(trained_mlp)
    np.testing.assert_allclose(model.decision_function(Xt), trained_mlp.decision_function(Xt),
                               atol=1e-4)
    cm, rep = compress_model(model, Xv, yv, 0.03, method=method, n_iter=3)
    assert rep.accuracy_before - rep.accuracy_after <= 0.03 + 1e-9
    assert rep.accuracy_after == pytest.approx(cm.score(Xv, yv))
    assert rep.bytes_after == cm.nbytes < model.nbytes and rep.memory_reduction > 2
    assert rep.flops_after < rep.flops_before
    text = rep.text()
    assert "bytes before" in text and "FLOPs after" in text and "total" in text
    assert len(rep.layers) == 3


def test_save_load_and_runtime_peak(tmp_path, trained_mlp, digits_split):
    _, _, Xv, yv, Xt, _ = digits_split
    cm, _ = compress_model(from_network(trained_mlp), Xv, yv, 0.05, method="sparse", n_iter=2)
    path = tmp_path / "m.npz"
    save_model(cm, path)
    again = load_model(path)
    np.testing.assert_allclose(again.decision_function(Xt), cm.decision_function(Xt), atol=1e-5)
    assert load_any_model(path).nbytes == cm.nbytes
    rt = SparseRuntime(path)
    assert rt.model_bytes == cm.nbytes
    for batch in (1, 64):
        out = rt.run(Xt[:batch], measure=True)
        np.testing.assert_allclose(out, cm.decision_function(Xt[:batch]), atol=1e-5)
        pred = rt.predict_peak_bytes(batch)
        assert abs(rt.last_peak_bytes - pred) <= 0.2 * pred, (batch, pred, rt.last_peak_bytes)
    # the peak holds one layer: below the whole (uncompressed) model at batch 1
    rt.run(Xt[:1], measure=True)
    big = from_network(trained_mlp)
    save_model(big, tmp_path / "big.npz")
    rt_big = SparseRuntime(tmp_path / "big.npz")
    rt_big.run(Xt[:1], measure=True)
    assert rt_big.last_peak_bytes < rt_big.model_bytes
    assert abs(rt_big.last_peak_bytes - rt_big.predict_peak_bytes(1)) <= \
        0.2 * rt_big.predict_peak_bytes(1)


def test_tampered_file_is_refused(tmp_path, trained_mlp):
    path = tmp_path / "m.npz"
    save_model(from_network(trained_mlp), path)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError):
        load_model(path)


def test_target_that_cannot_be_met(trained_mlp, digits_split):
    _, _, Xv, yv, _, _ = digits_split
    model = from_network(trained_mlp)
    with pytest.raises(BudgetInfeasible, match=r"target not met on cortex-m3 .* the weights take "
                       r"[\d,]+ bytes \(target 1,000\).*smallest model reached stores") as ei:
        compress_model(model, Xv, yv, 0.01, profile="cortex-m3", max_memory=1000)
    assert ei.value.model.nbytes < model.nbytes
    with pytest.raises(BudgetInfeasible, match=r"takes .* s \(target 1e-09 s\)"):
        compress_model(model, Xv, yv, 0.01, profile="cortex-m3", max_time=1e-9)
    # a reachable target passes and is reported
    cm, rep = compress_model(model, Xv, yv, 0.05, profile="cortex-m3")
    assert rep.profile == "cortex-m3" and rep.predicted_time_s > 0
    assert cm.nbytes <= rep.targets["model_bytes"]


def test_bad_input(trained_mlp, digits_split):
    _, _, Xv, yv, _, _ = digits_split
    model = from_network(trained_mlp)
    model.layers[0].arrays["W"] = model.layers[0].arrays["W"].copy()
    model.layers[0].arrays["W"][0, :3] = np.nan
    with pytest.raises(ValueError, match=r"layer 0 dense layer: W \(64, 128\) has 3 NaN/Inf"):
        compress_model(model, Xv, yv, 0.01)
    good = from_network(trained_mlp)
    with pytest.raises(ValueError, match="max_accuracy_loss must be in"):
        compress_model(good, Xv, yv, 5)
    with pytest.raises(ValueError, match=r"label\(s\) \[42\]"):
        compress_model(good, Xv, np.full(len(yv), 42), 0.01)
    with pytest.raises(ValueError, match="X has shape"):
        compress_model(good, Xv[:, :10], yv, 0.01)


def test_cnn_compiles(digits_split):
    from tinydl.nn import CNNClassifier
    Xtr, ytr, Xv, yv, Xt, yt = digits_split
    clf = CNNClassifier((1, 8, 8), ((8, 3, 2), (16, 3, 1)), (32,), loss="cross_entropy",
                        optimizer="adam", learning_rate=2e-3, epochs=4).fit(Xtr, ytr)
    model = from_network(clf)
    np.testing.assert_allclose(model.decision_function(Xt), clf.decision_function(Xt),
                               atol=1e-4)
    cm, rep = compress_model(model, Xv, yv, 0.05, data_aware=False)
    assert rep.accuracy_before - rep.accuracy_after <= 0.05 + 1e-9
    assert any("cross-channel" in r.choice or "per-kernel" in r.choice for r in rep.layers)
    # data-aware: channel reduction competes with the separations; the budget still holds
    cm, rep = compress_model(model, Xv, yv, 0.05, X_fit=Xtr, quantize="int8")
    assert rep.val_lost <= 0.05 + 1e-9 and rep.accuracy_before - rep.accuracy_after <= 0.05
    assert all(r.choice != "kept" for r in rep.layers if r.kind == "conv")
