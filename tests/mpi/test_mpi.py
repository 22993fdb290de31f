"""TinyDL over MPI: small ``mpiexec -n 2`` jobs compared with one process.

What is checked (the tolerances stated in ``tinydl/distributed.py``):

* dictionary and codes (the streaming transform's, the learner's code window, codes of test
  data) bit-identical to a single process, and identical on every rank;
* the network's parameters within ``1e-4 * (1 + |w|)`` of the single process's (float32;
  the summation order of each mini-batch's gradient differs), predictions equal;
* a rank killed mid-run: the job exits non-zero within the timeout with a line naming the
  rank, and ``--resume`` / ``load`` continues from the checkpoint to the same model;
* a rank that stops answering (SIGSTOP): its peer names it and aborts after
  ``TINYDL_MPI_TIMEOUT``.

Skipped with the reason when mpi4py or mpiexec is absent (``pip install ".[mpi]"``).
"""
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
SCRIPTS = HERE / "scripts"
REPO = HERE.parents[1]
MPIEXEC = shutil.which("mpiexec")

try:
    import importlib.util
    HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None
except ImportError:  # pragma: no cover
    HAVE_MPI4PY = False

need_mpi = pytest.mark.skipif(
    not (HAVE_MPI4PY and MPIEXEC),
    reason="MPI tests need mpi4py and mpiexec (pip install '.[mpi]'): "
           f"mpi4py {'found' if HAVE_MPI4PY else 'missing'}, "
           f"mpiexec {'found' if MPIEXEC else 'missing'}")

#: the network's tolerance against one process (float32): |w_mpi - w_1| <= RTOL * (1 + |w_1|)
NET_RTOL = 1e-4
#: seconds a job may take in these tests before it counts as hung
JOB_LIMIT = 120


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "OMPI_", "PMIX_", "MPI_LOCAL", "HYDRA_"))}
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _run(args, mpi=2, timeout=JOB_LIMIT, **env):
    cmd = ([MPIEXEC, "-n", str(mpi)] if mpi else []) + [sys.executable] + [str(a) for a in args]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO),
                          env=_env(**env), timeout=timeout)
    return proc, time.monotonic() - t0


def _same_model(ref, got, what):
    for key in ref.files:
        if key == "params":
            p1, p2 = ref[key].astype(np.float64), got[key].astype(np.float64)
            excess = np.abs(p2 - p1) - NET_RTOL * (1 + np.abs(p1))
            assert excess.max() <= 0, f"{what}: network differs by {excess.max():.3g} " \
                                      f"beyond {NET_RTOL} * (1 + |w|)"
        else:
            np.testing.assert_array_equal(got[key], ref[key], err_msg=f"{what}: {key}")


@need_mpi
def test_backend_ops_against_numpy_on_two_ranks():
    proc, _ = _run([SCRIPTS / "backend_ops.py"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ok: mpi backend on 2 ranks" in proc.stdout


@need_mpi
def test_two_ranks_match_one_process(tmp_path):
    ref_out, mpi_out = tmp_path / "ref.npz", tmp_path / "mpi"
    proc, _ = _run([SCRIPTS / "fit_compare.py", ref_out], mpi=0)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc, _ = _run([SCRIPTS / "fit_compare.py", mpi_out])
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = np.load(ref_out)
    r0, r1 = np.load(f"{mpi_out}.rank0.npz"), np.load(f"{mpi_out}.rank1.npz")
    assert int(ref["n_updates"]) > 3
    for key in r0.files:  # every rank holds the same model, bit for bit
        np.testing.assert_array_equal(r0[key], r1[key], err_msg=f"rank 0 vs rank 1: {key}")
    _same_model(ref, r0, "mpiexec -n 2 vs one process")


@need_mpi
def test_killed_rank_is_named_and_the_run_resumes(tmp_path):
    ref_out = tmp_path / "ref.npz"
    proc, _ = _run([SCRIPTS / "resume.py", tmp_path / "ref_ckpt", ref_out], mpi=0)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt, out = tmp_path / "ckpt", tmp_path / "out.npz"
    timeout = 20
    proc, took = _run([SCRIPTS / "resume.py", ckpt, out], TINYDL_TEST_KILL_AT=500,
                      TINYDL_TEST_KILL_RANK=1, TINYDL_MPI_TIMEOUT=timeout)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-3000:]
    assert "lost MPI rank 1 of 2" in text and "SIGKILL" in text, text[-3000:]
    assert took < timeout, f"the job took {took:.1f} s to stop (timeout {timeout} s)"
    assert not out.exists()
    seen = int((ckpt / "LATEST").read_text().strip().split("-")[1])
    assert 500 <= seen < 1200
    proc, _ = _run([SCRIPTS / "resume.py", ckpt, out, "--resume"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"starting at sample {seen}" in proc.stdout
    _same_model(np.load(ref_out), np.load(out), "killed and resumed vs uninterrupted")


@need_mpi
def test_silent_rank_times_out_naming_it(tmp_path):
    timeout = 3
    proc, took = _run([SCRIPTS / "resume.py", tmp_path / "ckpt", tmp_path / "out.npz"],
                      TINYDL_TEST_KILL_AT=300, TINYDL_TEST_SIGNAL="STOP",
                      TINYDL_MPI_TIMEOUT=timeout)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-3000:]
    assert "lost MPI rank(s) 1 of 2" in text and "no progress for" in text, text[-3000:]
    # the timeout bounds the stop (waiting, liveness check, abort); plus start-up
    assert took < timeout + 10, f"took {took:.1f} s"


@need_mpi
def test_uncaught_error_on_one_rank_names_it():
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from tinydl.distributed import MPITinyDLClassifier\n"
            "m = MPITinyDLClassifier()\n"
            "if m.rank == 1:\n"
            "    raise RuntimeError('boom on one rank')\n"
            "m._ctx()['mpi'].barrier()\n") % str(REPO)
    proc, took = _run(["-c", code], TINYDL_MPI_TIMEOUT=20)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "MPI rank 1 of 2" in text and "boom on one rank" in text, text[-3000:]
    assert took < 20


def test_a_rank_whose_supervisor_is_gone_exits_at_once():
    # the launcher kills the supervisors; a child that outlives its supervisor (no death
    # signal delivered) must not wait out the timeout in its next collective
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from hal.backends.mpi import _exit_if_orphaned\n"
            "_exit_if_orphaned(1, 2)\n"
            "print('still here')\n") % str(REPO)
    gone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=_env(_TINYDL_MPI_SUPERVISED="999999999"), timeout=60)
    assert gone.returncode == 143 and "still here" not in gone.stdout
    assert "MPI rank 1 of 2" in gone.stderr and "supervisor, pid 999999999, is gone" in gone.stderr
    alive = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=_env(_TINYDL_MPI_SUPERVISED=str(os.getpid())), timeout=60)
    assert alive.returncode == 0 and "still here" in alive.stdout, alive.stderr


def test_under_mpi_reads_only_the_environment(monkeypatch):
    from tinydl.distributed import under_mpi
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_WORLD_SIZE",
                "MV2_COMM_WORLD_SIZE", "SLURM_NTASKS", "MPI_LOCALNRANKS"):
        monkeypatch.delenv(var, raising=False)
    assert under_mpi() is False
    monkeypatch.setenv("PMI_SIZE", "1")
    assert under_mpi() is False
    monkeypatch.setenv("PMI_SIZE", "2")
    assert under_mpi() is True
    monkeypatch.delenv("PMI_SIZE")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert under_mpi() is True


def test_backend_probe_says_why_outside_mpiexec(monkeypatch):
    import hal
    from hal.backends.mpi import MPIBackend
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_WORLD_SIZE",
                "MV2_COMM_WORLD_SIZE", "SLURM_NTASKS", "MPI_LOCALNRANKS"):
        monkeypatch.delenv(var, raising=False)
    why = MPIBackend.probe()
    assert why and ("mpiexec" in why or "mpi4py" in why)
    ok, reason = hal.available_backends()["mpi"]
    assert not ok and reason == why
    with pytest.raises(hal.BackendUnavailable, match="mpi"):
        hal.get_backend("mpi")


# -- the `tinydl fit` command under mpiexec ----------------------------------------------------
def _cli_data(tmp_path, n=3000, m=64, classes=4, seed=0):
    """Features .npy and labels .npy; returns the command-line arguments naming them."""
    rng = np.random.default_rng(seed)
    centers = 1.5 * rng.standard_normal((classes, m))
    y = rng.integers(0, classes, n)
    X = (centers[y] + rng.standard_normal((n, m))).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    return [tmp_path / "X.npy", "--labels", tmp_path / "y.npy"]


CLI_ARGS = ["--l", "24", "--k", "5", "--hidden", "16", "--window", "1024", "--n-batch", "128",
            "--epochs", "8", "--chunk", "100", "--checkpoint-every", "256", "--quiet"]


def _rank_worker_pids(rank, mark):
    """Pids of the processes doing rank ``rank``'s work in the job marked ``mark``: those whose
    environment holds the mark and PMI_RANK=rank and whose parent does too (the supervised
    child; its parent is the supervisor)."""
    def env_of(pid):
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                return dict(kv.split(b"=", 1) for kv in fh.read().split(b"\0") if b"=" in kv)
        except OSError:
            return {}

    def ppid_of(pid):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return -1

    want = {b"TINYDL_TEST_MARK": mark.encode(), b"PMI_RANK": str(rank).encode()}
    mine = [int(p) for p in os.listdir("/proc") if p.isdigit()
            and all(env_of(p).get(k) == v for k, v in want.items())]
    return [p for p in mine if ppid_of(p) in mine]


@need_mpi
def test_cli_fit_two_ranks_matches_one_process(tmp_path):
    from tinydl.pipeline import TinyDLClassifier
    data = _cli_data(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    proc, _ = _run(["-m", "tinydl", "fit"] + data + ["-o", one] + CLI_ARGS, mpi=0)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc, _ = _run(["-m", "tinydl", "fit"] + data + ["-o", two] + CLI_ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("fit:") == 1  # only rank 0 prints
    a, b = TinyDLClassifier.load(one), TinyDLClassifier.load(two)
    np.testing.assert_array_equal(a.transform_.dictionary_, b.transform_.dictionary_)
    for attr in ("codes_indices_", "codes_values_", "codes_window_"):
        if hasattr(a, attr):
            np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr))
    p1 = a.network_.network_.params.astype(np.float64)
    p2 = b.network_.network_.params.astype(np.float64)
    assert (np.abs(p2 - p1) - NET_RTOL * (1 + np.abs(p1))).max() <= 0


@need_mpi
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cli_fit_killed_rank_then_resume(tmp_path):
    from tinydl.pipeline import TinyDLClassifier
    data = _cli_data(tmp_path)
    ref, out = tmp_path / "ref", tmp_path / "out"
    proc, _ = _run(["-m", "tinydl", "fit"] + data + ["-o", ref] + CLI_ARGS, mpi=0)
    assert proc.returncode == 0, proc.stderr[-3000:]
    mark, timeout = f"kill-{os.getpid()}-{time.time()}", 20
    cmd = [MPIEXEC, "-n", "2", sys.executable, "-m", "tinydl", "fit"] + [str(d) for d in data] \
        + ["-o", str(out)] + CLI_ARGS
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           cwd=str(REPO), env=_env(TINYDL_TEST_MARK=mark,
                                                   TINYDL_MPI_TIMEOUT=timeout))
    killed = None
    deadline = time.monotonic() + JOB_LIMIT
    while job.poll() is None and time.monotonic() < deadline:
        if (out / "LATEST").exists():  # mid-run: a checkpoint is on disk
            pids = _rank_worker_pids(1, mark)
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed = time.monotonic()
                break
        time.sleep(0.01)
    assert killed is not None, "the run ended before rank 1 could be killed"
    stdout, stderr = job.communicate(timeout=JOB_LIMIT)
    took = time.monotonic() - killed
    text = stdout + stderr
    assert job.returncode != 0, text[-3000:]
    assert "lost MPI rank 1 of 2" in text, text[-3000:]
    assert took < timeout, f"the job took {took:.1f} s to stop after the kill:\n{text[-3000:]}"
    proc, _ = _run(["-m", "tinydl", "fit"] + data + ["-o", out, "--resume"] + CLI_ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed at sample" in proc.stdout
    a, b = TinyDLClassifier.load(ref), TinyDLClassifier.load(out)
    assert a.n_samples_seen_ == b.n_samples_seen_
    np.testing.assert_array_equal(a.transform_.dictionary_, b.transform_.dictionary_)
    p1 = a.network_.network_.params.astype(np.float64)
    p2 = b.network_.network_.params.astype(np.float64)
    assert (np.abs(p2 - p1) - NET_RTOL * (1 + np.abs(p1))).max() <= 0
