"""Do plans hold on the machine they were calibrated on?  Calibrate this host (one BLAS
thread, the numpy backend), plan for a grid of memory and per-sample transform-time budgets on
that profile, run each plan's learner on a stream, and compare the measured peak memory
(tracemalloc) and transform time per sample with the budget and with the plan's prediction.

A plan passes when the measured figures are within its budget up to the cost model's tolerance
(``--tolerance``, default 0.30: the +-30% run-to-run spread of these shared machines; the cost
model itself was within 3-16% of measured times here, ``benchmarks/cost_model.py``).

    python benchmarks/plan_grid.py [--quick] [--json PATH]

Data: synthetic (rank-40 class structure plus noise, seed 0), m = 1024 features, 8 classes.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402

from benchmarks._common import blas_threads, print_table, write_json  # noqa: E402
from benchmarks.memory import synthetic  # noqa: E402


def measure(plan, X, y, classes):
    """Peak traced bytes while streaming, then steady-state transform seconds per sample."""
    learner = plan.learner(backend="numpy")
    tracemalloc.start()
    try:
        for s in range(0, len(X), plan.chunk):
            xb = X[s:s + plan.chunk].copy()
            learner.partial_fit(xb, y[s:s + plan.chunk], classes=classes)
            del xb
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the cost model prices OMP coding in chunks on a full dictionary: time exactly that
    rows = X[:4 * plan.chunk]
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for s in range(0, len(rows), plan.chunk):
            learner.transform_.transform(rows[s:s + plan.chunk], dense=False)
        best = min(best, (time.perf_counter() - t0) / len(rows))
    return peak, best, learner.transform_.n_atoms_


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="quick calibration, fewer budgets")
    ap.add_argument("--m", type=int, default=1024)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--tolerance", type=float, default=0.30)
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)

    from hal.calibrate import calibrate
    from tinydl.customize import BudgetInfeasible, plan
    t0 = time.perf_counter()
    profile, _ = calibrate("plan-grid-host", quick=args.quick, backends=["numpy"],
                           dtypes=("float32",), progress=False)
    print(f"calibrated this host in {time.perf_counter() - t0:.1f} s (numpy, float32, "
          f"BLAS threads {blas_threads()})")
    X, y = synthetic(args.n, args.m, 8)
    classes = np.arange(8)
    memories = [4, 5, 6, 7, 32] if not args.quick else [5, 32]
    times = [None, 4e-6, 7e-6] if not args.quick else [None, 6e-6]
    rows, out = [], []
    for mib in memories:
        for t in times:
            budget = dict(memory_bytes=int(mib * 2 ** 20), time_per_sample=t)
            try:
                p = plan(args.m, 8, profile, n_samples=args.n, **budget)
            except BudgetInfeasible as exc:
                out.append(dict(budget, feasible=False, message=str(exc)))
                rows.append((f"{mib} MiB", "-" if t is None else f"{t * 1e6:.0f}",
                             "infeasible", "-", "-", "-", "-", "-"))
                continue
            peak, tps, atoms = measure(p, X, y, classes)
            mem_ok = peak <= budget["memory_bytes"] * (1 + args.tolerance)
            t_ok = t is None or tps <= t * (1 + args.tolerance)
            rec = dict(budget, feasible=True, l=p.l, k=p.k, window=p.window, chunk=p.chunk,
                       hidden_layer_sizes=list(p.hidden_layer_sizes),
                       predicted_bytes=p.footprint_bytes, measured_bytes=int(peak),
                       predicted_s=p.transform_seconds, measured_s=tps, n_atoms=int(atoms),
                       memory_ok=bool(mem_ok), time_ok=bool(t_ok))
            out.append(rec)
            rows.append((f"{mib} MiB", "-" if t is None else f"{t * 1e6:.0f}",
                         f"l={p.l} k={p.k} w={p.window} c={p.chunk}",
                         f"{p.footprint_bytes / 2 ** 20:.2f}", f"{peak / 2 ** 20:.2f}",
                         f"{p.transform_seconds * 1e6:.1f}", f"{tps * 1e6:.1f}",
                         "yes" if mem_ok and t_ok else "NO"))
    print_table(["memory", "time us", "plan", "pred MiB", "meas MiB", "pred us", "meas us",
                 "within"], rows)
    held = [r for r in out if r["feasible"]]
    ok = sum(r["memory_ok"] and r["time_ok"] for r in held)
    print(f"{ok}/{len(held)} feasible plans within their budgets on the calibrated host "
          f"(tolerance {args.tolerance:.0%}); {len(out) - len(held)} budgets infeasible")
    if args.json:
        write_json(args.json, dict(rows=out, tolerance=args.tolerance, m=args.m, n=args.n,
                                   within=ok, feasible=len(held)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
