"""``tinydl reproduce`` end to end with tiny settings: the bundled digits and synthetic data in
the Daily and Sports format (the paper's files are not needed)."""
import json

import numpy as np
import pytest

from tinydl.cli import main
from tinydl.reproduce import Settings, add_noise, reproduce

KEYS = {"accuracy_raw", "accuracy_tinydl", "preprocess_ms", "train_energy_ratio",
        "train_time_ratio", "exec_time_ratio", "size_reduction"}


def synthetic_dsa(n_per_class=80, n_classes=4, seed=0):
    """Segments of 125 time steps x 45 channels: each activity a different frequency per
    channel, plus an offset (like gravity) and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(125)[:, None]
    X, y = [], []
    for c in range(n_classes):
        freq = 0.02 + 0.03 * c + 0.002 * np.arange(45)
        for _ in range(n_per_class):
            phase = rng.uniform(0, 2 * np.pi, 45)
            X.append(np.sin(2 * np.pi * freq * t + phase) + 9.8 * (np.arange(45) % 9 == 0)
                     + 0.3 * rng.standard_normal((125, 45)))
            y.append(c)
    return np.array(X, np.float16), np.array(y)


@pytest.fixture
def dsa_file(tmp_path):
    X, y = synthetic_dsa()
    p = tmp_path / "dsa_synthetic.npz"
    np.savez(p, X=X, y=y)
    return p


def test_reproduce_cli_on_dsa_format(tmp_path, dsa_file, capsys):
    out, png = tmp_path / "r.json", tmp_path / "noise.png"
    rc = main(["reproduce", "--data", str(dsa_file), "--quick", "--json", str(out),
               "--plot", str(png)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "smart sensing" in text and "paper (TK1)" in text and "120.3x" in text
    assert "SNR (dB)" in text and "modeled" in text
    res = json.loads(out.read_text())
    r = res["dsa_synthetic.npz"]
    assert KEYS <= set(r)
    assert r["split"].startswith("stratified random 0.2 test split, seed 0")
    assert r["order"] == "shuffled (seed 0)"
    assert [row["snr_db"] for row in r["noise"]["rows"]] == [None, 15.0, 10.0]
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # the plot extra is optional: no plot, and the result says so
        assert r["noise"]["plot"] is None and not png.exists()
    else:
        assert r["noise"]["plot"] == str(png)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {d["name"].split(" ")[0] for d in r["departures"]} >= {"per-feature", "training"}
    # both learners beat chance (0.25) even with quick settings
    assert r["accuracy_raw"] > 0.4 and r["accuracy_tinydl"] > 0.4
    assert r["predicted"]["profile"] == "jetson-tk1" and r["predicted"]["preprocess_ms"] > 0


def test_reproduce_digits_library_call():
    st = Settings(quick=True, noise="off", departures=False)
    res = reproduce(["digits"], st)
    r = res["digits"]
    assert KEYS <= set(r) and "noise" not in r and r["split"] == "given"
    assert r["size_reduction"] == r["raw"]["params"] / r["tinydl"]["params"]
    assert r["tinydl"]["candidates_tried"][0]["params"] <= r["tinydl"]["params"]


def test_reproduce_missing_file_is_one_line_exit_2(tmp_path, capsys):
    rc = main(["reproduce", "--data", "digits", "--data", str(tmp_path / "absent.npz")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no such data file or folder" in err


def test_add_noise_snr():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 125 * 3)) + 5.0
    for snr in (10.0, 15.0):
        N = add_noise(X, snr, np.random.default_rng(1), sample_shape=(125, 3)) - X
        ratio = np.mean(X ** 2) / np.mean(N ** 2)
        assert abs(10 * np.log10(ratio) - snr) < 0.3
    assert add_noise(X, None, rng) is X
