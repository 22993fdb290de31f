"""Bad input to the commands ends in one line naming the problem and exit status 2 (argparse's
own 2 for a bad flag value), before any work is done or any file is written; files the
commands write get the permissions ``open()`` would give them."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from tinydl.cli import main

FIT = ["--l", "12", "--k", "3", "--alpha", "0.3", "--hidden", "8", "--window", "64",
       "--n-batch", "32", "--epochs", "1", "--seed", "0", "--quiet", "--backend", "numpy"]


def _fit_argv(data, out, resume=False):
    return ["fit", data, "-o", out, *FIT] + (["--resume"] if resume else [])


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A stream, a `tinydl fit` model directory on it, an MLP .npz and a validation file."""
    d = tmp_path_factory.mktemp("made")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 10)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    np.savez(d / "stream.npz", X_train=X, y_train=y)
    assert main([str(a) for a in _fit_argv(d / "stream.npz", d / "fit")]) == 0
    from tinydl.nn import MLPClassifier
    MLPClassifier((8,), epochs=2, seed=0).fit(X[:400], y[:400]).save(d / "mlp.npz")
    np.savez(d / "val.npz", X_val=X[400:], y_val=y[400:])
    good = (d / "val.npz").read_bytes()
    (d / "trunc.npz").write_bytes(good[:len(good) // 2])
    (d / "empty.npz").write_bytes(b"")
    np.save(d / "x.npy", X[400:])
    bad = X[400:].copy()
    bad[7, 3] = np.nan
    np.savez(d / "nan.npz", X_val=bad, y_val=y[400:], X=bad)
    np.savez(d / "obj.npz", X_val=np.array([object()] * 3, dtype=object), y_val=y[:3])
    return d


def _fails(argv, capsys, *needles):
    """``tinydl argv`` exits 2 with one line on stderr holding each needle, no traceback."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def _usage_error(argv, capsys, needle):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("name,needle", [("trunc.npz", "not a readable .npz"),
                                         ("empty.npz", "not a readable .npz"),
                                         ("x.npy", "needs labels"),
                                         ("nan.npz", "row 7, column 3 is nan"),
                                         ("obj.npz", "Python objects"),
                                         ("absent.npz", "no such data file")])
def test_compress_data_files(made, capsys, name, needle):
    _fails(["compress", made / "mlp.npz", "--data", made / name, "-o", made / "c.npz"],
           capsys, needle)
    assert not (made / "c.npz").exists()


@pytest.mark.parametrize("name,needle", [("trunc.npz", "not a readable .npz"),
                                         ("nan.npz", "row 7, column 3 is nan")])
def test_compress_fit_data_files(made, capsys, name, needle):
    _fails(["compress", made / "mlp.npz", "--data", made / "val.npz", "--fit-data",
            made / name, "-o", made / "c.npz"], capsys, needle)


def test_compress_sizes_take_units_and_refuse_non_positive(made, capsys):
    _usage_error(["compress", made / "mlp.npz", "--data", made / "val.npz", "--max-memory",
                  "0", "-o", made / "c.npz"], capsys, "must be positive")
    import argparse

    from tinydl.cli.compress import add_arguments
    p = argparse.ArgumentParser()
    add_arguments(p)
    a = p.parse_args(["m", "--data", "v", "-o", "o.npz", "--max-memory", "64KiB",
                      "--max-time", "2ms"])
    assert a.max_memory == 65536 and a.max_time == pytest.approx(2e-3)


@pytest.mark.parametrize("name,needle", [("trunc.npz", "not a readable .npz"),
                                         ("obj.npz", "Python objects"),
                                         ("nan.npz", "row 7, column 3 is nan")])
def test_export_calibration_files(made, capsys, name, needle):
    out = made / "exp-bad"
    _fails(["export", made / "fit", "-o", out, "--weights", "int8", "--calibrate",
            made / name], capsys, needle)
    assert not out.exists()


@pytest.mark.parametrize("profile", ["nosuch", "tiny"])
def test_export_refused_by_the_profile_writes_nothing(made, tmp_path, capsys, profile):
    if profile == "tiny":  # cortex-m3 with 2 KB of SRAM and flash: nothing fits
        from tinydl.cli.export import __file__ as here
        src = os.path.join(os.path.dirname(here), "..", "..", "platforms", "cortex-m3.toml")
        text = open(src).read().replace('tag = "cortex-m3"', 'tag = "tiny"')
        text = text.replace("capacity_bytes = 65536", "capacity_bytes = 2048")
        text = text.replace("flash_bytes = 524288", "flash_bytes = 2048")
        profile = tmp_path / "tiny.toml"
        profile.write_text(text)
    out = made / "exp-refused"
    line = _fails(["export", made / "fit", "-o", out, "--profile", profile], capsys)
    assert ("nosuch" in line) if profile == "nosuch" else (
        "bytes of flash" in line and "tiny has 2,048 and 2,048" in line
        and "nothing written" in line)
    assert not out.exists()


def test_fit_resume_on_a_damaged_checkpoint(made, tmp_path, capsys):
    import shutil
    out = tmp_path / "fit"
    shutil.copytree(made / "fit", out)
    with open(out / "LATEST") as fh:
        ck = out / fh.read().strip() / "learner.npz"
    raw = ck.read_bytes()
    for cut in (raw[:len(raw) // 2], b""):
        ck.write_bytes(cut)
        _fails(_fit_argv(made / "stream.npz", out, resume=True), capsys, "learner.npz")


@pytest.mark.parametrize("flag,value,needle", [("--l", "0", "must be a whole number >= 1"),
                                               ("--k", "-1", "must be a whole number >= 1"),
                                               ("--window", "x", "must be a whole number"),
                                               ("--alpha", "2", "must be a number in [0, 1]")])
def test_fit_overrides_are_checked_before_the_directory_is_made(made, tmp_path, capsys, flag,
                                                                value, needle):
    _usage_error(["fit", made / "stream.npz", "-o", tmp_path / "o", flag, value], capsys,
                 needle)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv,needle", [(["--memory", "0"], "must be positive"),
                                         (["--memory", "12XB"], "cannot read a memory size"),
                                         (["--val-fraction", "2"], "between 0 and 1"),
                                         (["--val-fraction", "0"], "between 0 and 1")])
def test_demo_flags(capsys, argv, needle):
    _usage_error(["demo", *argv], capsys, needle)


def test_plan_budget_above_the_profiles_memory(capsys):
    from hal.profile import load_profile
    cap = load_profile("raspberry-pi-4").memory.capacity_bytes
    _fails(["plan", "--m", "64", "--classes", "3", "--profile", "raspberry-pi-4", "--memory",
            str(2 * cap)], capsys, f"more than 'raspberry-pi-4' has ({cap:,} bytes)")


def test_calibrate_stops_before_measuring_on_a_missing_meter_log(tmp_path, capsys):
    _fails(["calibrate", "-o", tmp_path / "c.toml", "--quick", "--power-csv",
            tmp_path / "absent.csv"], capsys, "--power-csv", "no such file")
    assert not (tmp_path / "c.toml").exists()


def test_reproduce_checks_the_profile_before_training(capsys):
    _fails(["reproduce", "--data", "digits", "--quick", "--profile", "nosuch"], capsys,
           "nosuch")


def test_written_files_get_the_umask_mode_and_keep_a_replaced_ones(tmp_path):
    from tinydl.io import atomic_write_text
    mask = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o640
        os.chmod(tmp_path / "a.txt", 0o604)
        atomic_write_text(tmp_path / "a.txt", "y")
        assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o604
    finally:
        os.umask(mask)
