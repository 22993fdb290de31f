"""``tinydl compress MODEL --data VAL.npz --max-accuracy-loss F -o OUT``."""
import numpy as np
import pytest

from tinydl.cli import main
from tinydl.compress import load_model


def test_compress_cli(tmp_path, trained_mlp, digits_split, capsys):
    _, _, Xv, yv, Xt, _ = digits_split
    trained_mlp.save(tmp_path / "mlp.npz")
    np.savez(tmp_path / "val.npz", X_val=Xv, y_val=yv)
    rc = main(["compress", str(tmp_path / "mlp.npz"), "--data", str(tmp_path / "val.npz"),
               "--max-accuracy-loss", "0.05", "-o", str(tmp_path / "out.npz")])
    assert rc == 0
    assert "memory" in capsys.readouterr().out
    cm = load_model(tmp_path / "out.npz")
    assert cm.nbytes < trained_mlp.network_.params.nbytes
    pytest.importorskip("onnx", reason="ONNX export needs the onnx extra")
    rc = main(["compress", str(tmp_path / "mlp.npz"), "--data", str(tmp_path / "val.npz"),
               "-o", str(tmp_path / "out.onnx"), "--json"])
    assert rc == 0 and (tmp_path / "out.onnx").stat().st_size > 0


def test_compress_cli_errors(tmp_path, trained_mlp, digits_split, capsys):
    _, _, Xv, yv, _, _ = digits_split
    trained_mlp.save(tmp_path / "mlp.npz")
    np.savez(tmp_path / "val.npz", X_val=Xv, y_val=yv)
    rc = main(["compress", str(tmp_path / "mlp.npz"), "--data", str(tmp_path / "val.npz"),
               "--profile", "cortex-m3", "--max-memory", "500", "-o", str(tmp_path / "o.npz")])
    err = capsys.readouterr().err
    assert rc == 2 and "target 500" in err and len(err.strip().splitlines()) == 1
    rc = main(["compress", str(tmp_path / "mlp.npz"), "--data", str(tmp_path / "nope.npz"),
               "-o", str(tmp_path / "o.npz")])
    assert rc == 2 and "no such data file" in capsys.readouterr().err


def test_compress_cli_paired_criterion(tmp_path, trained_mlp, digits_split, capsys):
    from tinydl.compress.compiler import paired_upper
    Xtr, _, Xv, yv, _, _ = digits_split
    trained_mlp.save(tmp_path / "mlp.npz")
    np.savez(tmp_path / "val.npz", X_val=Xv, y_val=yv)
    rc = main(["compress", str(tmp_path / "mlp.npz"), "--data", str(tmp_path / "val.npz"),
               "--criterion", "paired", "--confidence", "1", "--max-accuracy-loss", "0.03",
               "-o", str(tmp_path / "p.npz")])
    assert rc == 0 and "criterion paired" in capsys.readouterr().out
    cm = load_model(tmp_path / "p.npz")
    right0, right1 = trained_mlp.predict(Xv) == yv, cm.predict(Xv) == yv
    assert paired_upper(int(np.sum(right0 & ~right1)), int(np.sum(~right0 & right1)), len(yv),
                        1.0) <= 0.03 + 1e-9


def test_compress_cli_int8_auto_with_fit_data(tmp_path, trained_mlp, digits_split, capsys):
    Xtr, _, Xv, yv, Xt, _ = digits_split
    trained_mlp.save(tmp_path / "mlp.npz")
    np.savez(tmp_path / "val.npz", X_val=Xv, y_val=yv)
    np.savez(tmp_path / "fit.npz", X_fit=Xtr)
    rc = main(["compress", str(tmp_path / "mlp.npz"), "--data", str(tmp_path / "val.npz"),
               "--method", "auto", "--quantize", "int8", "--criterion", "flips",
               "--confidence", "0.5", "--refine", "5", "--refine-seeds", "2",
               "--fit-data", str(tmp_path / "fit.npz"), "--max-accuracy-loss", "0.03",
               "-o", str(tmp_path / "q.npz")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "int8" in out and "criterion flips" in out
    cm = load_model(tmp_path / "q.npz")
    assert any(a.dtype == np.int8 for la in cm.layers for a in la.arrays.values())
    ort = pytest.importorskip("onnxruntime", reason="the ONNX check needs onnxruntime")
    pytest.importorskip("onnx", reason="ONNX export needs the onnx extra")
    from tinydl.compress import export_onnx
    export_onnx(cm, tmp_path / "q.onnx")  # int8 weights go out dequantized
    sess = ort.InferenceSession(str(tmp_path / "q.onnx"))
    got = sess.run(None, {sess.get_inputs()[0].name: Xt[:20].astype(np.float32)})[0]
    np.testing.assert_allclose(got.reshape(20, -1), cm.decision_function(Xt[:20]), rtol=1e-4,
                               atol=1e-4)
