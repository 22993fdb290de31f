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


def test_selection_rules_quick(dsa_file):
    """Each learner's recipe, TinyDL's scaling and size are chosen on validation by the
    stated rules; both raw recipes are reported."""
    from tinydl.reproduce.protocol import RECIPES, SCALINGS
    st = Settings(quick=True, noise="off", departures=False)
    r = reproduce([str(dsa_file)], st)["dsa_synthetic.npz"]
    raw, t = r["raw"], r["tinydl"]
    assert set(raw["recipes"]) == set(RECIPES) and raw["recipe"] in RECIPES
    ok = {k: v for k, v in raw["recipes"].items() if v is not None}
    assert raw["recipe"] == max(ok, key=lambda k: (ok[k]["val_accuracy"], k == "sgd-l2"))
    assert r["accuracy_raw_paper_recipe"] == raw["recipes"]["sgd-l2"]["accuracy"]
    assert r["accuracy_raw_tinydl_recipe"] == raw["recipes"][t["recipe"]]["accuracy"]
    assert t["recipe"] in RECIPES and t["scaling"] in SCALINGS
    tried = [c for c in t["candidates_tried"] if "val_accuracy" in c]
    stage1 = [c for c in tried if c["stage"] == "recipe and scaling"]
    assert len(stage1) == len(RECIPES) * len(SCALINGS)
    best1 = max(c["val_accuracy"] for c in stage1)
    assert any(c["recipe"] == t["recipe"] and c["scaling"] == t["scaling"]
               and c["val_accuracy"] == best1 for c in stage1)
    # the size stage: every candidate at least 20x smaller, the chosen one the most accurate
    sizes = [c for c in tried if c["recipe"] == t["recipe"] and c["scaling"] == t["scaling"]]
    assert all(20 * c["params"] <= raw["params"] for c in sizes)
    assert r["size_reduction"] >= 20
    assert r["val_accuracy_tinydl"] == max(c["val_accuracy"] for c in sizes)
    assert {(c["l"], c["k"]) for c in sizes} == {(32, 6), (32, 13)}


def test_transform_and_size_candidates():
    from tinydl.reproduce.protocol import _size_candidates, _transforms_for
    assert _transforms_for(5625) == [(100, 20), (100, 40), (200, 40), (200, 80)]
    assert _transforms_for(64) == [(64, 13), (64, 26)]
    st = Settings()
    raw = 520 * 256 + 256 + 256 * 128 + 128 + 128 * 13 + 13
    cands, limited = _size_candidates(520, 13, raw, st)
    assert limited and all(20 * p <= raw for p, *_ in cands)
    assert (7309, 100, 20, (64,)) in cands and [c[0] for c in cands] == sorted(c[0] for c in cands)
    cands, limited = _size_candidates(520, 13, 1000, st)   # nothing 20x smaller: the smallest
    assert not limited and len(cands) == 1


def test_exec_timing_alone_uses_the_full_runs_choices(tmp_path, dsa_file):
    """benchmarks/reproduce_exec.py: the execution columns without the selection, at the
    settings a full run chose (read from its JSON), timed as the full run times them."""
    import subprocess
    import sys

    from tinydl.reproduce.exec_timing import chosen_settings, exec_timing
    full = tmp_path / "full.json"
    assert main(["reproduce", "--data", str(dsa_file), "--quick", "--noise", "off",
                 "--no-departures", "--backend", "numpy", "--json", str(full)]) == 0
    entry = json.loads(full.read_text())["dsa_synthetic.npz"]
    assert entry["backend"] == "numpy"
    chosen = chosen_settings(entry)
    r = exec_timing(str(dsa_file), Settings(quick=True, epochs=1), chosen=chosen)
    assert r["tinydl_sizes"] == entry["tinydl"]["sizes"]
    assert r["raw_sizes"] == entry["raw"]["sizes"]
    assert r["exec_time_ratio_with_transform"] == pytest.approx(
        r["exec_us_raw"] / r["exec_us_tinydl_with_transform"])
    assert r["exec_us_tinydl"] > 0 and r["exec_us_raw"] > 0
    # the reference size when no full run is given
    ref = exec_timing(str(dsa_file), Settings(quick=True, epochs=1))
    assert ref["chosen"]["l"] == 32 and ref["chosen"]["recipe"] == "adam-l2"
    # the script's command line
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[2]
    out = tmp_path / "exec.json"
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "reproduce_exec.py"),
                           "--data", "digits", "--from-json", str(full), "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "e2e ratio" in proc.stdout
    assert "exec_time_ratio_with_transform" in json.loads(out.read_text())["digits"]


def test_reproduce_backend_flag_runs_both_learners_there(tmp_path, require_backend):
    """--backend picks the learners' backend; the profile's predictions keep the profile's
    own (jetson-tk1 has no figures for native)."""
    require_backend("native")
    out = tmp_path / "r.json"
    assert main(["reproduce", "--data", "digits", "--quick", "--noise", "off",
                 "--no-departures", "--backend", "native", "--json", str(out)]) == 0
    r = json.loads(out.read_text())["digits"]
    assert r["backend"] == "native" and r["settings"]["backend"] == "native"
    assert r["predicted"]["exec_time_ratio_with_transform"] > 0
