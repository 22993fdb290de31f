"""`tinydl plan / fit / evaluate / predict` through the command line: a killed fit resumes to
the same model, and every command refuses bad input with one line and exit status 2."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tinydl(*args, timeout=120):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "tinydl", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def make_stream(path, n=3000, m=96, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((12, m))
    C = rng.standard_normal((classes, 12)) * 2
    y = rng.integers(0, classes, n)
    X = (C[y] + 0.7 * rng.standard_normal((n, 12))) @ B + 0.1 * rng.standard_normal((n, m))
    np.savez(path, X_train=X.astype(np.float32), y_train=y,
             X_test=X[:300].astype(np.float32), y_test=y[:300])
    return path


FIT_ARGS = ("--l", 24, "--k", 5, "--hidden", "16", "--window", 256, "--n-batch", 64,
            "--epochs", 2, "--checkpoint-every", 128, "--seed", 7, "--chunk", 50, "--quiet")


def _final_arrays(model_dir):
    with open(os.path.join(model_dir, "LATEST")) as fh:
        ck = os.path.join(model_dir, fh.read().strip())
    out = {}
    for name in sorted(os.listdir(ck)):
        with np.load(os.path.join(ck, name), allow_pickle=False) as z:
            for key in z.files:
                out[f"{name}:{key}"] = z[key]
    return out


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    return make_stream(str(tmp_path_factory.mktemp("data") / "stream.npz"))


@pytest.fixture(scope="module")
def reference(stream, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ref") / "model")
    r = tinydl("fit", stream, "-o", out, *FIT_ARGS)
    assert r.returncode == 0, r.stderr
    return out


def _kill_during(stream, out, wait_for_checkpoints, extra=()):
    """Start a fit, SIGKILL it once ``wait_for_checkpoints`` checkpoints exist."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "tinydl", "fit", stream, "-o", out,
                             *map(str, FIT_ARGS + tuple(extra))], env=env,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    latest = os.path.join(out, "LATEST")
    seen, last = 0, None
    deadline = time.time() + 60
    while proc.poll() is None and time.time() < deadline:
        if os.path.exists(latest):
            try:
                cur = open(latest).read().strip()
            except OSError:
                cur = last
            if cur and cur != last:
                seen, last = seen + 1, cur
                if seen >= wait_for_checkpoints:
                    proc.send_signal(signal.SIGKILL)
                    break
        time.sleep(0.002)
    proc.wait(30)
    return proc.returncode, last


@pytest.mark.parametrize("after", [1, 4])
def test_sigkill_then_resume_gives_the_same_model(stream, reference, tmp_path, after):
    out = str(tmp_path / "model")
    rc, at = _kill_during(stream, out, after)
    if rc == 0:
        pytest.fail("the fit finished before it could be killed: make the stream longer")
    assert rc == -signal.SIGKILL
    killed_at = int(at.split("-")[1])
    assert 0 < killed_at < 3000  # killed mid-stream
    r = tinydl("fit", stream, "-o", out, *FIT_ARGS, "--resume")
    assert r.returncode == 0, r.stderr
    a, b = _final_arrays(reference), _final_arrays(out)
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key], equal_nan=a[key].dtype.kind == "f"), \
            f"{key} differs after resuming at {killed_at}"


def test_shuffle_is_deterministic_and_resume_continues_the_permutation(stream, reference,
                                                                        tmp_path):
    once = str(tmp_path / "once")
    r = tinydl("fit", stream, "-o", once, *FIT_ARGS, "--shuffle", 3, "--json", "-")
    assert r.returncode == 0, r.stderr
    import json
    assert json.loads(r.stdout)["shuffle"] == 3
    assert "labels arrive in blocks" not in r.stderr
    # killed, then resumed without repeating --shuffle: the saved permutation goes on
    out = str(tmp_path / "killed")
    rc, at = _kill_during(stream, out, 2, ("--shuffle", 3))
    assert rc == -signal.SIGKILL, "the fit finished before it could be killed"
    r = tinydl("fit", stream, "-o", out, *FIT_ARGS, "--shuffle", 4, "--resume")
    _one_line_refusal(r, "--shuffle 3")
    r = tinydl("fit", stream, "-o", out, *FIT_ARGS, "--resume")
    assert r.returncode == 0, r.stderr
    a, b = _final_arrays(once), _final_arrays(out)
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key], equal_nan=a[key].dtype.kind == "f"), \
            f"{key} differs after resuming at {at}"
    # and it is another stream than the file order
    ref = _final_arrays(reference)
    assert not np.array_equal(ref["learner.npz:labels_window"], a["learner.npz:labels_window"])


def test_blocked_labels_warn_once_unless_shuffled(tmp_path):
    src = np.load(make_stream(str(tmp_path / "s.npz"), n=1200))
    o = np.argsort(src["y_train"], kind="stable")
    np.savez(tmp_path / "sorted.npz", X_train=src["X_train"][o], y_train=src["y_train"][o])
    args = ("--l", 24, "--k", 5, "--hidden", "16", "--n-batch", 128, "--epochs", 1, "--quiet")
    r = tinydl("fit", tmp_path / "sorted.npz", "-o", tmp_path / "a", *args)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "labels arrive in blocks" in ln]
    assert len(lines) == 1 and "over 5 classes" in lines[0] and "--shuffle" in lines[0], \
        r.stderr
    r = tinydl("fit", tmp_path / "sorted.npz", "-o", tmp_path / "b", *args, "--shuffle", 0)
    assert r.returncode == 0 and "labels arrive in blocks" not in r.stderr, r.stderr
    r = tinydl("fit", tmp_path / "s.npz", "-o", tmp_path / "c", *args)
    assert r.returncode == 0 and "labels arrive in blocks" not in r.stderr, r.stderr


def test_fit_evaluate_predict_roundtrip(stream, reference, tmp_path):
    r = tinydl("evaluate", reference, "--data", stream, "--json")
    assert r.returncode == 0, r.stderr
    import json
    res = json.loads(r.stdout)
    assert res["n_samples"] == 300 and res["accuracy"] > 0.5
    pred = tmp_path / "p.npy"
    r = tinydl("predict", reference, "--data", stream, "-o", pred)
    assert r.returncode == 0, r.stderr
    assert np.load(pred, allow_pickle=False).shape == (300,)
    # resuming a finished run streams nothing and changes nothing
    before = _final_arrays(reference)
    r = tinydl("fit", stream, "-o", reference, *FIT_ARGS, "--resume")
    assert r.returncode == 0, r.stderr
    after = _final_arrays(reference)
    assert all(np.array_equal(before[k], after[k], equal_nan=before[k].dtype.kind == "f")
               for k in before)


# -- refusals ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 10)).astype(np.float32)
    y = rng.integers(0, 3, 200)
    Xn = X.copy()
    Xn[17, 4] = np.nan
    np.savez(d / "nan.npz", X_train=Xn, y_train=y)
    np.savez(d / "keys.npz", A=X, B=y)
    np.savez(d / "short_y.npz", X_train=X, y_train=y[:150])
    np.savez(d / "ok.npz", X_train=X, y_train=y, X_test=X[:20], y_test=y[:20])
    np.savez(d / "wrong_m.npz", X_test=X[:, :7], y_test=y)
    (d / "trunc.npz").write_bytes((d / "ok.npz").read_bytes()[:300])
    (d / "bad.csv").write_text("1,2,3\n4,x,6\n")
    return d


def _one_line_refusal(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err


def test_commands_refuse_bad_input(bad_files, tmp_path):
    d = bad_files
    out = str(tmp_path / "m")
    _one_line_refusal(tinydl("fit", d / "missing.npz", "-o", out), "missing.npz")
    _one_line_refusal(tinydl("fit", d / "keys.npz", "-o", out), "X_train")
    _one_line_refusal(tinydl("fit", d / "short_y.npz", "-o", out), "150")
    _one_line_refusal(tinydl("fit", d / "nan.npz", "-o", out), "row 17")
    _one_line_refusal(tinydl("fit", d / "trunc.npz", "-o", out), "trunc.npz")
    _one_line_refusal(tinydl("fit", d / "bad.csv", "-o", out), "bad.csv")
    _one_line_refusal(tinydl("fit", d / "ok.npz", "-o", out, "--profile", "no-such-board"),
                      "no-such-board")
    _one_line_refusal(tinydl("fit", d / "ok.npz", "-o", out, "--backend", "cuda9"), "cuda9")
    _one_line_refusal(tinydl("fit", d / "ok.npz", "-o", out, "--memory", "10kB"),
                      "memory needs at least")
    _one_line_refusal(tinydl("fit", d / "ok.npz", "-o", out, "--memory", "lots"), "lots")
    assert not os.path.exists(os.path.join(out, "LATEST"))
    _one_line_refusal(tinydl("plan", "--m", 100, "--classes", 5, "--profile", "cortex-m3"),
                      "inference-only")
    _one_line_refusal(tinydl("plan", "--m", 100, "--classes", 5, "--time-per-sample",
                             "1ns"), "time needs at least")
    _one_line_refusal(tinydl("plan", "--data", d / "nan.npz", "--target-error", 0.2),
                      "row 17")
    _one_line_refusal(tinydl("evaluate", tmp_path / "nothing", "--data", d / "ok.npz"),
                      "nothing")
    # a real model, then data that does not match it
    r = tinydl("fit", d / "ok.npz", "-o", out, "--l", 8, "--k", 2, "--n-batch", 50,
               "--window", 100, "--quiet")
    assert r.returncode == 0, r.stderr
    _one_line_refusal(tinydl("evaluate", out, "--data", d / "wrong_m.npz"), "7 features")
    _one_line_refusal(tinydl("predict", out, "--data", d / "nan.npz"), "row 17")
    _one_line_refusal(tinydl("predict", out, "--data", d / "ok.npz", "-o", tmp_path / "p.txt"),
                      ".npy or .csv")
    # a second fit into a used directory is refused, not merged
    _one_line_refusal(tinydl("fit", d / "ok.npz", "-o", out), "--resume")
    (tmp_path / "m" / "LATEST").write_text("../../etc\n")
    _one_line_refusal(tinydl("evaluate", out, "--data", d / "ok.npz"), "not a checkpoint")


def test_help_lists_every_command():
    r = tinydl("--help")
    assert r.returncode == 0
    for cmd in ("demo", "devices", "calibrate", "plan", "fit", "evaluate", "predict",
                "compress", "reproduce"):
        assert cmd in r.stdout
        h = tinydl(cmd, "--help")
        assert h.returncode == 0 and "--json" in h.stdout, cmd


@pytest.mark.parametrize("lr", ["0", "-1e-3", "inf", "nan"])
def test_a_bad_learning_rate_stops_before_any_work(stream, tmp_path, lr):
    """`--learning-rate` must be a positive finite number: the command says so (with the
    value) and exits 2 before it reads or writes anything."""
    out = tmp_path / "m"
    r = tinydl("fit", stream, "-o", out, f"--learning-rate={lr}", "--quiet")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "--learning-rate must be a positive finite number" in r.stderr, r.stderr
    assert f"got {float(lr)!r}" in r.stderr, r.stderr
    assert not out.exists()


def test_budget_arguments_with_a_plan_are_refused_not_ignored(stream, tmp_path):
    """The budget arguments choose a plan: beside ``--plan`` they would be ignored, so a
    dictionary dtype asked for would silently not be used.  The command names them and exits
    2 before it writes anything; on ``--resume`` (often the first command run again) it warns
    that they are ignored and continues the checkpoint."""
    plan = tmp_path / "p.json"
    r = tinydl("plan", "--data", stream, "--memory", "4MiB", "-o", plan)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "m"
    r = tinydl("fit", stream, "--plan", plan, "-o", out, "--dictionary-dtype", "float32",
               "--memory", "1MiB", "--quiet")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "--memory, --dictionary-dtype choose a plan; with --plan" in r.stderr, r.stderr
    assert not out.exists()
    r = tinydl("fit", stream, "--plan", plan, "-o", out, "--rate", "100", "--quiet")
    assert r.returncode == 2 and "--rate chooses a plan; with --plan" in r.stderr, r.stderr
    assert not out.exists()
    r = tinydl("fit", stream, "--plan", plan, "-o", out, "--limit", 300, "--quiet")
    assert r.returncode == 0, r.stderr
    r = tinydl("fit", stream, "-o", out, "--resume", "--memory", "1MiB", "--limit", 600,
               "--quiet")
    assert r.returncode == 0, r.stderr
    assert "warning: --memory ignored: --resume continues the checkpoint's plan" in r.stderr


def test_budget_args_list_every_budget_argument_without_a_default():
    """``BUDGET_ARGS`` (what `tinydl fit` checks beside --plan) names exactly the budget
    arguments that have no default: one added to the group is not silently ignored."""
    import argparse

    from tinydl.cli._common import BUDGET_ARGS, add_budget_arguments
    p = argparse.ArgumentParser()
    add_budget_arguments(p)
    no_default = {a.dest for a in p._actions if a.default is None and a.dest != "help"}
    assert no_default == set(BUDGET_ARGS)
