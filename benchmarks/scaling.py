"""Transform throughput on 1 and 2 MPI ranks and 1 and 2 multiprocessing workers.

The paper's setting, m = 5625 features, l = 100 atoms, k = 20 non-zeros, on **synthetic**
data of that shape (the real Daily and Sports data is not needed; Gaussian rows, float32), one
BLAS thread per process.  What is timed: the streaming transform (Algorithm 2,
``StreamingDictionary.partial_fit_transform``) in its steady state - the dictionary is first
filled with its 100 atoms, then batches of ``--batch`` rows are coded by OMP - which is what a
long stream costs.

* ``mpi_N``: ``mpiexec -n N`` runs this script in worker mode; every rank feeds the same
  batches (SPMD) to a transform on :class:`hal.backends.mpi.MPIBackend`, which shards each
  batch's OMP across the ranks; rank 0 times it.
* ``mp_N``: the transform on :class:`hal.backends.multiprocessing.MultiprocessingBackend`
  with N worker processes (inputs through shared memory).

Each engine runs ``--rounds`` times, interleaved with the others (a load that comes and goes
on a shared machine then weighs on all alike), and reports the median.  Prints a table and the
ratios; ``--json PATH`` writes ``mpi_1``, ``mpi_2``, ``mp_1``, ``mp_2``
(samples/s) and the ratios.  Target: ``mpi_2 / mpi_1 >= 1.6`` on two cores.
Run: ``python benchmarks/scaling.py --json scaling.json`` (needs mpi4py and mpiexec for the
MPI rows; they are reported as missing otherwise).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402

from benchmarks._common import REPO_ROOT, blas_threads, print_table, write_json  # noqa: E402

M, L, K, ALPHA = 5625, 100, 20, 0.3


def _data(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, M), dtype=np.float32)


def _throughput(sd, X, batch: int, repeat: int, sync=None) -> float:
    """Median samples/s of coding ``X`` in batches, after filling the dictionary."""
    sd.partial_fit(_data(2 * L, seed=1))  # random rows: the first L join, D is full
    if sd.n_atoms_ != L:
        raise RuntimeError(f"warm-up left {sd.n_atoms_} atoms, expected {L}")
    rates = []
    for r in range(repeat + 1):
        if sync:
            sync()
        t0 = time.perf_counter()
        for s in range(0, len(X), batch):
            sd.partial_fit_transform(X[s:s + batch], dense=False)
        if sync:
            sync()
        if r:  # the first pass warms caches and workspaces
            rates.append(len(X) / (time.perf_counter() - t0))
    return float(np.median(rates))


def worker_mpi(args) -> None:
    from hal.backends.mpi import MPIBackend
    from tinydl.transform import StreamingDictionary
    be = MPIBackend(block=64)
    X = _data(args.samples)
    sd = StreamingDictionary(l=L, k=K, alpha=ALPHA, backend=be)
    rate = _throughput(sd, X, args.batch, args.repeat, sync=lambda: be.mpi.barrier())
    if be.rank == 0:
        with open(args.worker_out, "w") as fh:
            json.dump({"rate": rate, "ranks": be.size}, fh)


def run_mp(workers: int, args) -> float:
    from hal.backends.multiprocessing import MultiprocessingBackend
    from tinydl.transform import StreamingDictionary
    X = _data(args.samples)
    with MultiprocessingBackend(workers=workers, block=64, worker_threads=1) as be:
        sd = StreamingDictionary(l=L, k=K, alpha=ALPHA, backend=be)
        return _throughput(sd, X, args.batch, args.repeat)


def worker_indep(args) -> None:
    """One of N independent processes coding samples/N rows with plain NumPy, started at the
    same wall-clock time as the others: no communication, the machine's own ceiling."""
    from tinydl.transform import StreamingDictionary
    X = _data(max(args.batch, args.samples // args.indep_n))
    sd = StreamingDictionary(l=L, k=K, alpha=ALPHA)
    while time.time() < args.indep_start:
        time.sleep(0.001)
    rate = _throughput(sd, X, args.batch, args.repeat)
    with open(args.worker_out, "w") as fh:
        json.dump({"rate": rate}, fh)


def run_indep(n: int, args) -> float:
    """Samples/s of n independent NumPy processes together (the sum of their rates)."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time() + 3.0  # after every process has imported and built its data
        procs, outs = [], []
        for i in range(n):
            out = os.path.join(tmp, f"rate{i}.json")
            outs.append(out)
            procs.append(subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--worker-out", out,
                 "--indep-start", repr(start), "--indep-n", str(n), "--samples",
                 str(args.samples), "--batch", str(args.batch), "--repeat", str(args.repeat)],
                cwd=REPO_ROOT, env=dict(os.environ, OPENBLAS_NUM_THREADS="1")))
        for p in procs:
            p.wait(timeout=600)
        total = 0.0
        for out in outs:
            with open(out) as fh:
                total += json.load(fh)["rate"]
        return total


def run_mpi(ranks: int, args):
    exe = shutil.which("mpiexec")
    if exe is None:
        return None, "mpiexec not found"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None, "mpi4py not installed"
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rate.json")
        cmd = [exe, "-n", str(ranks), sys.executable, os.path.abspath(__file__),
               "--worker-out", out, "--samples", str(args.samples), "--batch",
               str(args.batch), "--repeat", str(args.repeat)]
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                   MKL_NUM_THREADS="1")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                              timeout=600)
        if proc.returncode != 0:
            return None, f"mpiexec -n {ranks} failed ({proc.returncode}): {proc.stderr[-500:]}"
        with open(out) as fh:
            return json.load(fh)["rate"], ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    ap.add_argument("--samples", type=int, default=4096, help="samples coded per pass")
    ap.add_argument("--batch", type=int, default=512, help="rows per partial_fit call")
    ap.add_argument("--repeat", type=int, default=5, help="timed passes per run (median)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="runs of each engine, interleaved (median)")
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the independent-process reference (indep_1, indep_2)")
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    ap.add_argument("--indep-start", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--indep-n", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker_out:
        worker_indep(args) if args.indep_start is not None else worker_mpi(args)
        return 0
    # rounds interleave the four engines, so that a load that comes and goes on a shared
    # machine weighs on all of them alike; each figure is the median over the rounds
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    runs = {k: [] for k in ("mpi_1", "mpi_2", "mp_1", "mp_2")}
    if not args.no_reference:
        runs.update(indep_1=[], indep_2=[])
    notes = {}
    for _ in range(args.rounds):
        for n in (1, 2):
            rate, why = run_mpi(n, args)
            if why:
                notes[f"mpi_{n}"] = why
            elif rate:
                runs[f"mpi_{n}"].append(rate)
        for n in (1, 2):
            runs[f"mp_{n}"].append(run_mp(n, args))
        if not args.no_reference:
            for n in (1, 2):
                runs[f"indep_{n}"].append(run_indep(n, args))
    res = {k: (float(np.median(v)) if v else None) for k, v in runs.items()}
    ratios = {}
    for kind in ("mpi", "mp", "indep"):
        if f"{kind}_1" not in res:
            continue
        a, b = res.get(f"{kind}_1"), res.get(f"{kind}_2")
        ratios[f"{kind}_2/{kind}_1"] = (b / a) if a and b else None
    if res["mpi_2"] and res["mp_2"]:
        ratios["mpi_2/mp_2"] = res["mpi_2"] / res["mp_2"]
    if res.get("indep_2") and res["mpi_2"]:
        # the share of the machine's own two-process throughput that MPI reaches
        ratios["mpi_2/indep_2"] = res["mpi_2"] / res["indep_2"]
    print(f"Streaming transform, steady state, synthetic data m={M}, l={L}, k={K} (float32), "
          f"batches of {args.batch}, {args.samples} samples per pass, median of "
          f"{args.repeat} passes x {args.rounds} interleaved rounds; BLAS threads per process: "
          f"{blas_threads()}; {os.cpu_count()} CPU(s); load average before: {load}")
    print_table(["engine", "samples/s", "us/sample"],
                [[k, f"{v:.0f}" if v else "-", f"{1e6 / v:.1f}" if v else "-"]
                 for k, v in res.items()])
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}x" if v else f"{k}: -")
    for k, v in notes.items():
        print(f"{k}: {v}")
    if args.json:
        write_json(args.json, dict(res, ratios=ratios, notes=notes, m=M, l=L, k=K,
                                   runs=runs, load_average_before=load,
                                   batch=args.batch, samples=args.samples,
                                   data="synthetic Gaussian rows (the paper's shape)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
