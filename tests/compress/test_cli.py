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
