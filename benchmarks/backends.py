"""Throughput of every backend that can run here, per operation, and its ratio to NumPy.

Usage: ``python benchmarks/backends.py [--json PATH] [--repeat N] [--quick]``

FLOPs per call are the null backend's counts (the same conventions everywhere: a multiply-add
is 2 FLOPs), so ``gflops`` = counted FLOPs / median wall time, and ``ratio_to_numpy`` = this
backend's gflops / NumPy's, measured in the same run.  The null backend computes nothing: its
``gflops`` is reported as 0 (no throughput) and the table shows the GFLOP it counted per call.

JSON: ``{backend: {op: {"gflops": x, "ratio_to_numpy": y}}}``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import hal  # noqa: E402

OPS = ["matmul", "correlate", "omp_encode", "dense_forward", "gather_matmul"]


def workloads(quick: bool, dtype=np.float32):
    """Inputs per op at the paper's smart-sensing sizes (m=5625, l=100, k=20)."""
    rng = np.random.default_rng(0)
    n = 128 if quick else 256
    m, l, k = (1125 if quick else 5625), 100, 20
    D = rng.standard_normal((l, m)).astype(dtype)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    G = D @ D.T
    X = rng.standard_normal((n, m)).astype(dtype)
    A = rng.standard_normal((512, 512)).astype(dtype)
    W1 = rng.standard_normal((1024, 512)).astype(dtype) * 0.03
    b1 = rng.standard_normal(512).astype(dtype)
    H = rng.standard_normal((n, 1024)).astype(dtype)
    ref = hal.get_backend("numpy").omp_encode(X, D, G, k)
    W2 = rng.standard_normal((l, 512)).astype(dtype)
    return {
        "matmul": lambda be: be.matmul(A, A),
        "correlate": lambda be: be.correlate(X, D),
        "omp_encode": lambda be: be.omp_encode(X, D, G, k),
        "dense_forward": lambda be: be.dense_forward(H, W1, b1),
        "gather_matmul": lambda be: be.gather_matmul(ref.indices, ref.values, W2),
    }


def median_time(fn, repeat: int) -> float:
    fn()  # warm-up: kernel builds, worker start, caches
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smaller inputs (m=1125)")
    args = ap.parse_args(argv)

    work = workloads(args.quick)
    counter = hal.get_backend("null")
    flops = {}
    for op in OPS:
        counter.reset()
        work[op](counter)
        flops[op] = counter.counts[op]["flops"]

    avail = hal.available_backends()
    names = ["numpy"] + [b for b, (ok, _) in avail.items() if ok and b != "numpy"]
    skipped = {b: why for b, (ok, why) in avail.items() if not ok}
    options = {"multiprocessing": {"workers": 2}}
    gflops = {}
    for name in names:
        if name == "null":
            gflops[name] = {op: 0.0 for op in OPS}
            continue
        with hal.get_backend(name, **options.get(name, {})) as be:
            gflops[name] = {op: flops[op] / median_time(lambda: work[op](be), args.repeat)
                            / 1e9 for op in OPS}
    result = {name: {op: {"gflops": round(g[op], 3),
                          "ratio_to_numpy": round(g[op] / gflops["numpy"][op], 3)}
                     for op in OPS} for name, g in gflops.items()}

    head = f"{'backend':<16}" + "".join(f"{op:>22}" for op in OPS)
    print(head)
    print(f"{'(GFLOP/call)':<16}" + "".join(f"{flops[op] / 1e9:>22.4f}" for op in OPS))
    for name, ops in result.items():
        if name == "null":
            cells = "".join(f"{'counts only':>22}" for _ in OPS)
        else:
            cells = "".join(f"{ops[op]['gflops']:>12.2f} ({ops[op]['ratio_to_numpy']:>5.2f}x)"
                            for op in OPS)
        print(f"{name:<16}{cells}")
    print("\nGFLOP/s (ratio to numpy, same run); one BLAS thread per process; float32; "
          "null computes nothing (gflops 0).")
    for b, why in skipped.items():
        print(f"skipped {b}: {why}")
    if args.json:
        from tinydl.cli import emit_json
        emit_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
