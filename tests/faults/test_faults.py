"""Fault injection: SIGKILL during fit/compress, ENOSPC and a read-only directory during
checkpoint writes, a backend failing mid-run.  Each run either stops with a typed, clear
error and the last checkpoint intact, or finishes; a resumed run must equal an uninterrupted
one (every saved array).  The long version (100+ kills) is benchmarks/reliability.py."""
from __future__ import annotations

import errno
import os
import random
import signal
import time

import numpy as np
import pytest

import hal
import hal._files as files_mod  # the atomic writer every model and checkpoint goes through
from tinydl.learner import TinyDLClassifier

from . import helpers as h

PARAMS = dict(l=12, k=3, alpha=0.3, hidden_layer_sizes=(8,), window=64, n_batch=32,
              epochs_per_update=1, seed=0)


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    d = tmp_path_factory.mktemp("stream")
    path = h.make_stream(d / "stream.npz")
    data = h.npz_arrays(path)
    return path, data["X_train"], data["y_train"]


@pytest.fixture(scope="module")
def reference(stream, tmp_path_factory):
    """An uninterrupted in-process run with checkpoints every 40 samples."""
    _, X, y = stream
    out = tmp_path_factory.mktemp("ref")
    lr = TinyDLClassifier(**PARAMS, checkpoint_dir=str(out), checkpoint_every=40)
    lr.partial_fit(X, y, classes=np.unique(y))
    lr.finish()
    lr.save(out)
    return str(out)


def _resume_and_finish(out, X, y, backend=None):
    at = h.latest_samples(out)
    lr = TinyDLClassifier.load(out, backend=backend)
    lr.checkpoint_dir, lr.checkpoint_every = out, 40
    lr.partial_fit(X[at:], y[at:])
    lr.finish()
    lr.save(out)
    return at


def _started(out, X, y, backend=None):
    lr = TinyDLClassifier(**PARAMS, backend=backend, checkpoint_dir=str(out),
                          checkpoint_every=40)
    lr.partial_fit(X[:320], y[:320], classes=np.unique(y))
    return lr


@pytest.mark.parametrize("where", ["fsync", "replace", "mkstemp"])
def test_enospc_during_checkpoint_keeps_the_last_one(stream, reference, tmp_path,
                                                     monkeypatch, where):
    _, X, y = stream
    out = str(tmp_path / "m")
    lr = _started(out, X, y)
    before = h.checkpoint_arrays(out)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    target = files_mod.tempfile if where == "mkstemp" else files_mod.os
    monkeypatch.setattr(target, where, full)
    with pytest.raises(OSError, match=r"cannot write .*ckpt-0+360.*No space left") as ei:
        lr.partial_fit(X[320:], y[320:])
    assert ei.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert not h.diff_arrays(before, h.checkpoint_arrays(out))  # LATEST and its files intact
    assert not [f for f in os.listdir(os.path.join(out, "ckpt-000000000320"))
                if f.startswith(".tmp-")]
    assert _resume_and_finish(out, X, y) == 320
    assert h.same_model(out, reference)


def test_read_only_directory_during_checkpoint(stream, reference, tmp_path, monkeypatch):
    """Tests run as root, where chmod does not stop writes: the read-only directory is
    simulated by making the temporary-file creation fail with EROFS (and, when not root,
    also by a real chmod)."""
    _, X, y = stream
    out = str(tmp_path / "m")
    lr = _started(out, X, y)
    before = h.checkpoint_arrays(out)

    def ro(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(files_mod.tempfile, "mkstemp", ro)
    monkeypatch.setattr(files_mod.os, "makedirs", ro)
    with pytest.raises(OSError, match="Read-only file system"):
        lr.partial_fit(X[320:], y[320:])
    monkeypatch.undo()
    assert not h.diff_arrays(before, h.checkpoint_arrays(out))
    _resume_and_finish(out, X, y)
    assert h.same_model(out, reference)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores chmod; covered by the EROFS "
                    "monkeypatch test above")
def test_read_only_directory_chmod(stream, tmp_path):
    _, X, y = stream
    out = str(tmp_path / "m")
    lr = _started(out, X, y)
    before = h.checkpoint_arrays(out)
    os.chmod(out, 0o555)
    try:
        with pytest.raises(OSError):
            lr.partial_fit(X[320:], y[320:])
    finally:
        os.chmod(out, 0o755)
    assert not h.diff_arrays(before, h.checkpoint_arrays(out))


def test_cli_fit_reports_a_full_disk_in_one_line(stream, tmp_path, monkeypatch, capsys):
    from tinydl.cli import main
    path, _, _ = stream
    out = str(tmp_path / "m")
    calls = {"n": 0}
    real = files_mod.os.fsync

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > 12:  # some checkpoints succeed, then the disk fills up
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    monkeypatch.setattr(files_mod.os, "fsync", fsync)
    assert main(h.fit_argv(path, out)) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    monkeypatch.undo()
    assert h.latest_samples(out) > 0
    TinyDLClassifier.load(out)  # the last checkpoint loads


def _kill_trials(argv_fn, n, duration, rnd):
    for t in range(n):
        p = h.run_cli_forked(argv_fn(t))
        time.sleep(rnd.uniform(0.0, duration))
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
        p.join()
        assert p.exitcode in (0, -signal.SIGKILL)
        yield t


def test_sigkill_fit_then_resume_is_identical(stream, tmp_path):
    path, _, _ = stream
    ref = str(tmp_path / "ref")
    t0 = time.perf_counter()
    p = h.run_cli_forked(h.fit_argv(path, ref))
    p.join()
    assert p.exitcode == 0
    duration = time.perf_counter() - t0
    rnd = random.Random(0)
    for t in _kill_trials(lambda t: h.fit_argv(path, tmp_path / f"k{t}"), 6, duration, rnd):
        out = str(tmp_path / f"k{t}")
        p = h.run_cli_forked(h.fit_argv(path, out, resume=True))
        p.join()
        assert p.exitcode == 0
        bad = h.diff_arrays(h.checkpoint_arrays(ref), h.checkpoint_arrays(out))
        assert not bad, f"trial {t}: resumed model differs in {bad[:5]}"


def test_sigkill_compress_leaves_nothing_torn(stream, tmp_path):
    from tinydl.nn import MLPClassifier
    _, X, y = stream
    model, val = str(tmp_path / "model.npz"), str(tmp_path / "val.npz")
    MLPClassifier((16,), epochs=3, seed=0).fit(X[:400], y[:400]).save(model)
    np.savez(val, X_val=X[400:], y_val=y[400:])
    ref = str(tmp_path / "ref.npz")
    t0 = time.perf_counter()
    p = h.run_cli_forked(h.compress_argv(model, val, ref))
    p.join()
    assert p.exitcode == 0
    duration = time.perf_counter() - t0
    want = h.npz_arrays(ref)
    outs = lambda t: str(tmp_path / f"c{t}" / "out.npz")  # noqa: E731
    for t in range(4):
        os.makedirs(tmp_path / f"c{t}")
    for t in _kill_trials(lambda t: h.compress_argv(model, val, outs(t)), 4, duration,
                          random.Random(1)):
        if os.path.exists(outs(t)):  # absent or complete, never torn
            assert not h.diff_arrays(want, h.npz_arrays(outs(t)))
        p = h.run_cli_forked(h.compress_argv(model, val, outs(t)))
        p.join()
        assert p.exitcode == 0 and not h.diff_arrays(want, h.npz_arrays(outs(t)))


def test_opencl_build_failure_stops_cleanly(stream, reference, tmp_path, monkeypatch):
    _, X, y = stream
    try:
        hal.get_backend("opencl")
    except hal.BackendError as exc:
        if os.environ.get("TINYDL_REQUIRE_OPENCL") == "1":
            pytest.fail(f"TINYDL_REQUIRE_OPENCL=1 but OpenCL cannot run: {exc}")
        pytest.skip(f"no OpenCL here: {exc}")
    out = str(tmp_path / "m")
    lr = _started(out, X, y, backend="opencl")
    before = h.checkpoint_arrays(out)
    be = lr.transform_._be

    class FakeProgram:
        def __init__(self, *a, **k):
            pass

        def build(self, *a, **k):
            raise be._cl.Error("clBuildProgram failed: BUILD_PROGRAM_FAILURE (injected)")
    be._programs.clear()
    monkeypatch.setattr(be._cl, "Program", FakeProgram)
    with pytest.raises(hal.BackendError, match="building the float32 kernels failed"):
        lr.partial_fit(X[320:], y[320:])
    monkeypatch.undo()
    assert not h.diff_arrays(before, h.checkpoint_arrays(out))
    assert _resume_and_finish(out, X, y, backend="numpy") == 320


def test_worker_death_stops_cleanly_and_resumes(stream, tmp_path):
    _, X, y = stream
    out = str(tmp_path / "m")
    lr = _started(out, X, y, backend="multiprocessing")
    before = h.checkpoint_arrays(out)
    be = lr.transform_._be
    be.min_rows = 1  # every block goes to the workers
    eye = np.eye(X.shape[1], dtype=X.dtype)
    be.omp_encode(X[:4], eye, eye, 2)  # the pool is up
    pids = be.pids() if callable(be.pids) else be.pids
    os.kill(pids[0], signal.SIGKILL)
    with pytest.raises(hal.BackendError, match=r"worker .* died"):
        lr.partial_fit(X[320:], y[320:])
    assert not h.diff_arrays(before, h.checkpoint_arrays(out))
    be.close()
    assert _resume_and_finish(out, X, y, backend="numpy") == 320
