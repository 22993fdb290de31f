"""The C export compiled by the host's cc: the same predictions as Python, every layer kind
against the NumPy layers, int8 scales, the footprint prediction and the command line."""
import os

import numpy as np
import pytest

from tests.export.conftest import all_kinds_model, need_tools
from tinydl.export import export_c, footprint, predict_tinydl_footprint
from tinydl.export import toolchain as tc
from tinydl.export.emit import layout
from tinydl.export.program import program_of
from tinydl.export.quantize import quantize_rows


def _host_run(model, X, tmp_path, **kw):
    need_tools("cc")
    info = export_c(model, tmp_path / "export", **kw)
    exe = tc.build_host(info["out_dir"], tmp_path / "build")
    return info, tc.run(exe, X, tmp_path / "run")


def test_tinydl_float32_matches_python_predict(uji_slice, tmp_path):
    clf, _, Xte, yte = uji_slice
    info, res = _host_run(clf, Xte, tmp_path)
    assert info["ops"] == ["standardize", "omp", "gather", "relu", "dense", "relu", "dense"]
    py = clf.predict(Xte)
    got = clf.classes_[res["classes"]]
    # OMP may pick another atom at a near-tie where the sums run in another order: allow one
    assert np.count_nonzero(got != py) <= 1
    same = got == py
    np.testing.assert_allclose(res["scores"][same], clf._net_outputs(Xte)[same], rtol=1e-3,
                               atol=1e-3)
    # the files the export promises, with no malloc and no libm beyond sqrtf/expf
    src = (tmp_path / "export" / "tinydl_model.c").read_text() + \
        (tmp_path / "export" / "tinydl_runtime.c").read_text()
    assert "malloc(" not in src and "<stdlib.h>" not in src
    assert "static const float L1_D_f[" in src
    assert set(info["files"]) >= {"README.md", "tinydl_model.c", "tinydl_model.h"}
    readme = (tmp_path / "export" / "README.md").read_text()
    assert f"{info['flash_bytes']:,} bytes" in readme and f"{info['ram_bytes']:,} bytes" in readme


def test_tinydl_int8_close_to_float32(uji_slice, tmp_path):
    clf, Xcal, Xte, yte = uji_slice
    info, res = _host_run(clf, Xte, tmp_path, weights="int8", calibrate=Xcal)
    src = (tmp_path / "export" / "tinydl_model.c").read_text()
    assert "static const int8_t L1_D_q[" in src and "L1_D_f" not in src
    acc_py = clf.score(Xte, yte)
    acc = np.mean(clf.classes_[res["classes"]] == yte)
    assert acc >= acc_py - 0.05, (acc, acc_py)
    # int8 stores a quarter of the float32 weights, plus a scale per channel (the Gram
    # matrix and the statistics stay float32)
    f32 = footprint(layout(program_of(clf)))
    assert info["const_bytes"] < 0.4 * f32["const_bytes"]


def test_every_layer_kind_against_numpy(tmp_path):
    """A random network of every compressed layer kind: the C scores are the NumPy layers'."""
    cm, X = all_kinds_model()
    _, res = _host_run(cm, X, tmp_path)
    ref = cm.decision_function(X)
    np.testing.assert_allclose(res["scores"], ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(res["classes"], np.argmax(ref, axis=1))


def test_quantize_rows_properties():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((7, 30))
    m = quantize_rows(W)
    # f = 1 without data: round to nearest, every error within half a step
    assert np.all(np.abs(W - m.dense()) <= m.s[:, None] / 2 + 1e-6)
    assert np.array_equal(np.abs(m.q).max(axis=1), np.full(7, 127))
    # with data, each row's output error is no larger than with f = 1
    X = rng.standard_normal((50, 30))
    md = quantize_rows(W, X)
    err = lambda mm: np.square(X @ (W - mm.dense()).T).sum(0)  # noqa: E731
    assert np.all(err(md) <= err(m) * (1 + 1e-6))
    u = quantize_rows(W / np.linalg.norm(W, axis=1, keepdims=True), X, unit_norm=True)
    np.testing.assert_allclose(np.linalg.norm(u.dense(), axis=1), 1, rtol=1e-5)


def test_footprint_prediction_from_settings(uji_slice):
    clf = uji_slice[0]
    assert clf.transform_.n_atoms_ == clf.l  # a full dictionary: the settings say it all
    for w, kw in (("float32", {}), ("int8", {"calibrate": uji_slice[1][:64]})):
        prog = program_of(clf)
        if w == "int8":
            from tinydl.export.quantize import quantize_program
            quantize_program(prog, clf, kw["calibrate"])
        got = footprint(layout(prog))
        want = predict_tinydl_footprint(clf.n_features_in_, len(clf.classes_), clf.l, clf.k,
                                        clf.hidden_layer_sizes, weights=w)
        assert got == want


def test_bad_requests_raise(uji_slice, tmp_path):
    clf = uji_slice[0]
    with pytest.raises(ValueError, match="weights must be one of"):
        export_c(clf, tmp_path / "a", weights="int4")
    with pytest.raises(ValueError, match="need calibration data"):
        export_c(clf, tmp_path / "b", weights="int8")
    with pytest.raises(ValueError, match=r"shape \(5, 3\).*520"):
        export_c(clf, tmp_path / "c", weights="int8", calibrate=np.zeros((5, 3)))
    with pytest.raises(TypeError, match="cannot export a list"):
        export_c([], tmp_path / "d")
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "c")


def test_cli_export(uji_slice, tmp_path, capsys):
    from tinydl.cli import main
    clf, Xcal = uji_slice[:2]
    path = clf.save(tmp_path / "model")
    model_dir = os.path.dirname(path)
    out = tmp_path / "c"
    assert main(["export", model_dir, "--target", "c", "-o", str(out), "--profile",
                 "cortex-m3"]) == 0
    assert "predicted flash" in capsys.readouterr().out
    assert (out / "tinydl_model.c").is_file() and (out / "README.md").is_file()
    assert main(["export", model_dir, "--target", "c", "-o", str(out), "--weights", "int8"]) == 2
    assert "--calibrate" in capsys.readouterr().err
    np.savez(tmp_path / "cal.npz", X_train=Xcal[:100])
    assert main(["export", model_dir, "--target", "c", "-o", str(out), "--weights", "int8",
                 "--calibrate", str(tmp_path / "cal.npz"), "--json"]) == 0
    assert '"weights": "int8"' in capsys.readouterr().out


def test_unstandardized_model_with_a_partial_dictionary(tmp_path):
    """No standardization op, and fewer atoms learned than l: the export codes with the atoms
    there are (as the learner does) and gives Python's classes."""
    from tinydl.data import load_dataset
    from tinydl.learner import TinyDLClassifier
    d = load_dataset("digits")
    clf = TinyDLClassifier(l=400, k=6, alpha=0.6, hidden_layer_sizes=(12,), standardize=False,
                           rebuild="never", window=512, n_batch=256, seed=1).fit(
        d.X_train, d.y_train)
    assert 0 < clf.transform_.n_atoms_ < clf.l
    info, res = _host_run(clf, d.X_test[:80], tmp_path)
    assert info["ops"][0] == "omp"
    py = clf.predict(d.X_test[:80])
    assert np.count_nonzero(clf.classes_[res["classes"]] != py) <= 1


def test_int8_layers_of_tinydl_compress_kept(tmp_path):
    """A compressed model whose weights tinydl compress stored as int8 (per-channel scales):
    the export keeps them int8 and gives the NumPy layers' scores."""
    from tinydl.compress.quantize import QUANTIZABLE, quantize_layer
    cm, X = all_kinds_model()
    cm.layers = [quantize_layer(la) if la.kind in QUANTIZABLE else la for la in cm.layers]
    cm.build()
    info, res = _host_run(cm, X, tmp_path)
    src = (tmp_path / "export" / "tinydl_model.c").read_text()
    for name in ("L0_W_q", "L6_U_q", "L6_V_q", "L8_B_q", "L8_S_q", "L10_W_q"):
        assert f"static const int8_t {name}[" in src
    assert info["weights"] == "float32 and int8"  # kernel separation has no int8 form
    ref = cm.decision_function(X)
    np.testing.assert_allclose(res["scores"], ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("nnz", [None, 48])
def test_a_model_with_a_stored_int8_dictionary_exports_its_decoded_atoms(uji_slice, tmp_path,
                                                                          nnz):
    # a dictionary stored as int8 (dense, or sparse atoms: dictionary_nnz) exports the atoms
    # it computes with, scale included, not the raw int8 values
    from tinydl.learner import TinyDLClassifier
    _, Xtr, Xte, _ = uji_slice
    ytr = uji_slice[0].predict(Xtr)  # labels: the float32 model's, enough to train on
    clf = TinyDLClassifier(l=50, k=10, hidden_layer_sizes=(32, 16), window=1024, n_batch=500,
                           seed=0, dictionary_dtype="int8", dictionary_nnz=nnz).fit(Xtr, ytr)
    info, res = _host_run(clf, Xte, tmp_path)
    got = clf.classes_[res["classes"]]
    assert np.count_nonzero(got != clf.predict(Xte)) <= 1
    same = got == clf.predict(Xte)
    np.testing.assert_allclose(res["scores"][same], clf._net_outputs(Xte)[same], rtol=1e-3,
                               atol=1e-3)
