"""Reliability run: malformed files, SIGKILL at random points, disk and backend faults.

    python benchmarks/reliability.py --json reliability.json [--inputs 1200] [--kills 100]

Prints and writes ``inputs_tried``, ``faults_injected``, ``runs_resumed``, ``samples_lost``
and ``crashes`` (definitions in docs/reliability.md):

* fuzz: ``--inputs`` mutants of valid models, checkpoints, profiles, datasets and ONNX files
  fed to every public reader in worker processes (a hang past ``--timeout`` seconds, a death
  by signal, an untyped exception, or a reader allocating more than 8x the input + 64 MiB is
  a crash), plus a sample of them through ``tinydl fit`` / ``tinydl compress`` (must exit 2
  with a one-line error);
* kills: ``tinydl fit`` SIGKILLed at a random moment ``--kills`` times, then resumed with
  ``--resume``; the result must be identical (np.array_equal on every saved array) to an
  uninterrupted run, else every sample of the stream counts as lost; plus ``--compress-kills``
  kills of ``tinydl compress`` (the output is absent or complete, and a re-run matches);
* disk and backend faults: ENOSPC and a read-only directory during checkpoint writes, an
  OpenCL build failure and a multiprocessing worker dying mid-run.
"""
from __future__ import annotations

import argparse
import errno
import importlib.util
import json
import multiprocessing
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402


def _load(name, rel):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, rel))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


mut = _load("_rel_mutators", "tests/fuzz/mutators.py")
helpers = _load("_rel_fault_helpers", "tests/faults/helpers.py")


# -- fuzz ---------------------------------------------------------------------------------------
def _fuzz_worker(seeds, work, jobs, q):
    warnings.simplefilter("ignore")
    errors = mut.typed_errors()
    for i, kind, seed in jobs:
        q.send(("start", i))
        problems = []
        try:
            rnd = random.Random(f"{seed}-{kind}-{i}")
            path = mut.mutate_file(kind, rnd.choice(seeds[kind]), os.path.join(work, str(i)),
                                   rnd)
            size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path)
                       for f in fs) if os.path.isdir(path) else os.path.getsize(path)
        except Exception as exc:  # noqa: BLE001 - the harness itself failed on this input
            q.send(("done", i, kind, [f"making the input: {type(exc).__name__}: {exc}"]))
            continue
        for reader in mut.READERS[kind]:
            tracemalloc.start()
            try:
                reader(path)
            except errors:
                pass
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{reader.__name__}: {type(exc).__name__}: {str(exc)[:160]}")
            finally:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            if peak > 8 * size + mut.ALLOC_SLACK:
                problems.append(f"{reader.__name__}: allocated {peak} bytes for a {size}-byte "
                                "input")
        shutil.rmtree(os.path.join(work, str(i)), ignore_errors=True)
        q.send(("done", i, kind, problems))


def fuzz_kinds(seeds, log):
    """The file kinds that have seeds; a kind without (its optional extra is missing) is
    skipped, saying so."""
    kinds = [k for k in mut.KINDS if seeds.get(k)]
    for k in mut.KINDS:
        if k not in kinds:
            why = ("the 'onnx' extra is not installed (pip install tinydl[onnx])"
                   if k == "onnx" else "no seed file could be made")
            log(f"  skipped: {k} inputs ({why})")
    return kinds


def run_fuzz(n_inputs, seed, timeout, work, log):
    seeds = mut.make_seeds(os.path.join(work, "seeds"))
    kinds = fuzz_kinds(seeds, log)
    jobs = [(i, kinds[i % len(kinds)], seed) for i in range(n_inputs)]
    ctx = multiprocessing.get_context("fork")
    n_workers = max(1, min(2, os.cpu_count() or 1))
    shards = [jobs[w::n_workers] for w in range(n_workers)]
    tried, crashes, details = 0, 0, []
    for shard in shards:
        pending = list(shard)
        while pending:
            # a pipe, not a Queue: send() is written before it returns, so a worker killed
            # right after it has still told which input it was on
            q, w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_fuzz_worker, args=(seeds, work, pending, w))
            p.start()
            w.close()
            current, done = None, set()
            last = time.monotonic()
            while len(done) < len(pending):
                try:
                    if not q.poll(0.5):
                        raise queue.Empty
                    msg = q.recv()
                except (queue.Empty, EOFError):
                    what = None
                    if p.is_alive():
                        if time.monotonic() - last <= timeout:
                            continue
                        p.kill()  # a hang
                        p.join()
                        what = f"hang past {timeout} s"
                    else:
                        # died: drain what it sent before dying, then blame the input it was on
                        # (or the next one, if it died between inputs) - never wait on it
                        try:
                            msg = q.recv() if q.poll(0) else None
                        except EOFError:
                            msg = None
                        if msg is None:
                            what = f"worker died (exit code {p.exitcode})"
                    if what is not None:
                        if current is None or current in done:
                            current = next(j[0] for j in pending if j[0] not in done)
                        crashes += 1
                        tried += 1
                        details.append(f"input {current}: {what}")
                        done.add(current)
                        break
                last = time.monotonic()
                if msg[0] == "start":
                    current = msg[1]
                else:
                    _, i, kind, problems = msg
                    tried += 1
                    done.add(i)
                    if problems:
                        crashes += 1
                        details.append(f"input {i} ({kind}): " + "; ".join(problems))
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
            q.close()
            pending = [j for j in pending if j[0] not in done]
    for d in details[:20]:
        log(f"  crash: {d}")
    return tried, crashes, seeds


def run_cli_sample(seeds, n, seed, work, log):
    """Malformed files through the real CLI in a fresh interpreter: exit 2, one-line error."""
    tried = crashes = 0
    rnd = random.Random(f"{seed}-cli")
    val = os.path.join(work, "val.npz")
    shutil.copy(seeds["data_npz"][0], val)
    for i in range(n):
        kind = rnd.choice([k for k in ("data_npz", "data_csv", "data_npy", "model_npz",
                                       "onnx", "compressed_npz") if seeds.get(k)])
        path = mut.mutate_file(kind, rnd.choice(seeds[kind]), os.path.join(work, f"cli{i}"),
                               rnd)
        if kind.startswith("data"):
            argv = ["fit", path, "-o", os.path.join(work, f"cli{i}", "out"), "--quiet",
                    "--l", "8", "--k", "2", "--hidden", "4", "--n-batch", "16"]
            if kind == "data_npy":
                argv += ["--labels", os.path.join(work, "labels.npy")]
                np.save(argv[-1], np.arange(40) % 2)
        else:
            argv = ["compress", path, "--data", val, "-o",
                    os.path.join(work, f"cli{i}", "out.npz")]
        try:
            r = subprocess.run([sys.executable, "-m", "tinydl", *argv], capture_output=True,
                               text=True, timeout=120, cwd=REPO)
        except subprocess.TimeoutExpired:
            crashes += 1
            log(f"  crash: CLI hang on {kind} input {i}")
            continue
        tried += 1
        if r.returncode not in (0, 2) or "Traceback" in r.stderr:
            crashes += 1
            log(f"  crash: CLI {argv[0]} on {kind} input {i}: exit {r.returncode}: "
                f"{r.stderr.strip()[-300:]}")
        shutil.rmtree(os.path.join(work, f"cli{i}"), ignore_errors=True)
    return tried, crashes


# -- kills --------------------------------------------------------------------------------------
def _run(argv, limit=300):
    p = helpers.run_cli_forked(argv)
    p.join(limit)
    if p.is_alive():
        p.kill()
        p.join()
        return None
    return p.exitcode


def run_fit_kills(n, seed, work, log):
    data = helpers.make_stream(os.path.join(work, "stream.npz"))
    ref = os.path.join(work, "fit-ref")
    t0 = time.perf_counter()
    if _run(helpers.fit_argv(data, ref)) != 0:
        raise SystemExit("the uninterrupted reference fit failed")
    duration = time.perf_counter() - t0
    ref_arrays = helpers.checkpoint_arrays(ref)
    n_samples = int(np.load(data)["y_train"].shape[0])
    rnd = random.Random(f"{seed}-kill")
    kills = resumed = lost = crashes = t = 0
    while kills < n and t < 3 * n:  # until n kills landed inside a run
        t += 1
        out = os.path.join(work, f"fit-{t}")
        p = helpers.run_cli_forked(helpers.fit_argv(data, out))
        time.sleep(rnd.uniform(0.0, duration))
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
            kills += 1
        p.join()
        if p.exitcode not in (0, -signal.SIGKILL):
            crashes += 1
            log(f"  crash: fit trial {t} exited {p.exitcode} before the kill")
        at = helpers.latest_samples(out)
        if at:
            resumed += 1
        code = _run(helpers.fit_argv(data, out, resume=True))
        if code != 0:
            crashes += 1
            lost += n_samples - at
            log(f"  crash: resume of trial {t} (from sample {at}) exited {code}")
            continue
        bad = helpers.diff_arrays(ref_arrays, helpers.checkpoint_arrays(out))
        if bad:
            lost += n_samples
            log(f"  lost: trial {t} resumed from {at} differs in {bad[:4]}")
        shutil.rmtree(out, ignore_errors=True)
    return kills, resumed, lost, crashes


def run_compress_kills(n, seed, work, seeds, log):
    model = seeds["model_npz"][0]
    val = os.path.join(work, "val.npz")
    shutil.copy(seeds["data_npz"][1], val)
    ref = os.path.join(work, "cref.npz")
    t0 = time.perf_counter()
    if _run(helpers.compress_argv(model, val, ref)) != 0:
        raise SystemExit("the reference compress failed")
    duration = time.perf_counter() - t0
    ref_arrays = helpers.npz_arrays(ref)
    rnd = random.Random(f"{seed}-ckill")
    kills = crashes = t = 0
    while kills < n and t < 3 * n:
        t += 1
        out = os.path.join(work, f"c{t}", "out.npz")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        p = helpers.run_cli_forked(helpers.compress_argv(model, val, out))
        time.sleep(rnd.uniform(0.0, duration))
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
            kills += 1
        p.join()
        leftovers = [f for f in os.listdir(os.path.dirname(out)) if f != "out.npz"]
        if os.path.exists(out) and helpers.diff_arrays(ref_arrays, helpers.npz_arrays(out)):
            crashes += 1
            log(f"  crash: compress trial {t} left a torn or different output")
        if _run(helpers.compress_argv(model, val, out)) != 0 or helpers.diff_arrays(
                ref_arrays, helpers.npz_arrays(out)):
            crashes += 1
            log(f"  crash: compress re-run of trial {t} failed or differs")
        if leftovers:  # a temporary file from the killed write: harmless, but report it
            log(f"  note: compress trial {t} left {leftovers}")
        shutil.rmtree(os.path.dirname(out), ignore_errors=True)
    return kills, crashes


# -- disk and backend faults ---------------------------------------------------------------------
def _fault_child(kind, work, q):
    try:
        q.put(_one_fault(kind, work))
    except BaseException as exc:  # noqa: BLE001
        q.put((False, f"{kind}: {type(exc).__name__}: {exc}"))


def _one_fault(kind, work):
    """Fit in-process with checkpoints, inject ``kind`` after the first one; the error must be
    typed, the last checkpoint intact, and a resumed run identical to the reference."""
    import hal
    import hal._files as files_mod  # the atomic writer behind every save
    from tinydl.learner import TinyDLClassifier
    data = helpers.npz_arrays(os.path.join(work, "stream.npz"))
    X, y = data["X_train"], data["y_train"]
    ref = os.path.join(work, "fit-ref")
    out = os.path.join(work, f"fault-{kind}")
    shutil.rmtree(out, ignore_errors=True)
    params = dict(l=12, k=3, alpha=0.3, hidden_layer_sizes=(8,), window=64, n_batch=32,
                  epochs_per_update=1, seed=0)
    backend = {"opencl": "opencl", "worker": "multiprocessing"}.get(kind, "numpy")
    can, why = hal.available_backends().get(backend, (False, "not registered"))
    if not can:
        return None, f"{kind}: the {backend} backend cannot run here ({why})"
    learner = TinyDLClassifier(**params, backend=backend, checkpoint_dir=out,
                               checkpoint_every=40)
    classes = np.unique(y)
    learner.partial_fit(X[:320], y[:320], classes=classes)
    before = helpers.checkpoint_arrays(out)
    err = None
    try:
        if kind in ("enospc", "readonly"):
            code = errno.ENOSPC if kind == "enospc" else errno.EROFS

            def boom(*a, **k):
                raise OSError(code, os.strerror(code))
            if kind == "enospc":
                files_mod.os.fsync, saved = boom, files_mod.os.fsync
            else:
                files_mod.tempfile.mkstemp, saved = boom, files_mod.tempfile.mkstemp
            try:
                learner.partial_fit(X[320:500], y[320:500])
            finally:
                if kind == "enospc":
                    files_mod.os.fsync = saved
                else:
                    files_mod.tempfile.mkstemp = saved
        elif kind == "opencl":
            be = learner.transform_._be if hasattr(learner.transform_, "_be") else None
            be = be or hal.get_backend("opencl")

            def failing_build(*a, **k):
                raise hal.BackendError("opencl: building the float32 kernels failed "
                                       "(injected)")
            be._programs.clear()
            be._kernel = failing_build
            learner.partial_fit(X[320:500], y[320:500])
        elif kind == "worker":
            be = learner.transform_._be
            be.min_rows = 1  # every block goes to the workers
            eye = np.eye(X.shape[1], dtype=X.dtype)
            be.omp_encode(X[:4], eye, eye, 2)  # start the pool
            pids = be.pids() if callable(be.pids) else be.pids
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
                break
            learner.partial_fit(X[320:500], y[320:500])
    except (OSError, ValueError, TypeError, hal.BackendError) as exc:
        err = exc
    # the last checkpoint written before the fault is intact and LATEST names it
    after = helpers.checkpoint_arrays(out)
    if helpers.diff_arrays(before, after) and err is not None:
        return False, f"{kind}: the checkpoint changed under a failed write ({err})"
    at = helpers.latest_samples(out)
    if err is None:
        ok_msg = "finished (fallback)"
    else:
        ok_msg = f"stopped: {type(err).__name__}: {err}"
    # resume on the reference backend and finish the stream
    learner = TinyDLClassifier.load(out, backend="numpy")
    learner.checkpoint_dir, learner.checkpoint_every = out, 40
    learner.partial_fit(X[at:], y[at:])
    learner.finish()
    learner.save(out)
    if kind in ("enospc", "readonly"):
        bad = helpers.diff_arrays(helpers.checkpoint_arrays(ref), helpers.checkpoint_arrays(out))
        if bad:
            return False, f"{kind}: resumed model differs from the reference in {bad[:3]}"
    return True, f"{kind}: {ok_msg}; resumed from sample {at}"


def _answer(p, q, limit):
    """The child's ``(ok, message)``, or None if it died or ran past ``limit`` seconds
    without one (polled: a dead child is noticed at once, never waited on)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            return q.get(timeout=0.5)
        except queue.Empty:
            if not p.is_alive():
                try:
                    return q.get(timeout=1.0)
                except queue.Empty:
                    return None
    return None


def run_faults(work, log):
    ctx = multiprocessing.get_context("fork")
    injected = crashes = resumed = 0
    for kind in ("enospc", "readonly", "opencl", "worker"):
        q = ctx.Queue()
        p = ctx.Process(target=_fault_child, args=(kind, work, q))
        p.start()
        answer = _answer(p, q, 300)
        if answer is None:
            ok, msg = False, (f"{kind}: the fault run died (exit code {p.exitcode})"
                              if not p.is_alive() else f"{kind}: hang past 300 s")
        else:
            ok, msg = answer
        p.join(10)
        if ok is None:  # the backend it needs cannot run here (an optional extra)
            log(f"  skipped: {msg}")
            continue
        if p.is_alive():
            p.kill()
            p.join()
        injected += 1
        resumed += int(ok)
        crashes += int(not ok)
        log(f"  {'ok' if ok else 'FAIL'}: {msg}")
    return injected, resumed, crashes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--inputs", type=int, default=1200, help="malformed files (default 1200)")
    ap.add_argument("--cli-inputs", type=int, default=24, help="of them through the CLI too")
    ap.add_argument("--kills", type=int, default=100, help="SIGKILLs of fit (default 100)")
    ap.add_argument("--compress-kills", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=30.0, help="hang limit per input (s)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    log = print
    work = tempfile.mkdtemp(prefix="tinydl-reliability-")
    t0 = time.perf_counter()
    try:
        log(f"fuzz: {args.inputs} malformed files through every reader")
        tried, fuzz_crashes, seeds = run_fuzz(args.inputs, args.seed, args.timeout, work, log)
        log(f"fuzz: {args.cli_inputs} of them through the CLI")
        cli_tried, cli_crashes = run_cli_sample(seeds, args.cli_inputs, args.seed, work, log)
        log(f"kills: fit SIGKILLed {args.kills} times, then resumed")
        kills, resumed, lost, kill_crashes = run_fit_kills(args.kills, args.seed, work, log)
        log(f"kills: compress SIGKILLed {args.compress_kills} times")
        ckills, ccrashes = run_compress_kills(args.compress_kills, args.seed, work, seeds, log)
        log("faults: ENOSPC, read-only directory, OpenCL build failure, worker death")
        finj, fres, fcrashes = run_faults(work, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "inputs_tried": tried + cli_tried,
        "faults_injected": kills + ckills + finj,
        "runs_resumed": resumed + fres,
        "samples_lost": lost,
        "crashes": fuzz_crashes + cli_crashes + kill_crashes + ccrashes + fcrashes,
        "detail": {"fuzz_inputs": tried, "cli_inputs": cli_tried, "fit_kills": kills,
                    "compress_kills": ckills,
                   "other_faults": finj, "seconds": round(time.perf_counter() - t0, 1)},
    }
    for key in ("inputs_tried", "faults_injected", "runs_resumed", "samples_lost", "crashes"):
        print(f"{key}: {result[key]}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0 if result["samples_lost"] == 0 and result["crashes"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
