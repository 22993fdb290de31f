"""Peak memory of ``tinydl fit`` on a stream and on a stream 4x longer, against the plan.

Runs the real command (``python -m tinydl fit ... --trace-memory --json``) in a child process
on two ``.npy`` streams of the same data distribution, one ``--factor`` times longer, and
compares:

* ``peak_short_bytes`` / ``peak_long_bytes``: tracemalloc's peak in the child (every NumPy
  buffer and Python object the run allocates after its imports),
* ``predicted_bytes``: the footprint the customizer's plan predicted before the run
  (:func:`tinydl.customize.plan_footprint`),
* also the child's peak resident set size (polled every 20 ms; interpreter, libraries and
  the memory-mapped file's cached pages included) for reference.

Targets (issue 5): the two peaks within 10% of each other, each within 15% of the prediction.

Data: the paper's smart-sensing shape by default (m = 5625, 19 classes) generated
synthetically (low-rank class structure plus noise, seed 0), because the real Daily and Sports
file is not always present; ``--data FILE.npz`` uses a real file's ``X_train, y_train``
(flattened) repeated to make the longer stream.

    python benchmarks/memory.py --json memory.json
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402

from benchmarks._common import REPO_ROOT, blas_threads, print_table, write_json  # noqa: E402


def synthetic(n, m, n_classes, seed=0, rank=40):
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((rank, m)).astype(np.float32)
    centers = rng.standard_normal((n_classes, rank)).astype(np.float32)
    rng = np.random.default_rng(seed + 1)
    y = rng.integers(0, n_classes, n)
    Z = centers[y] + 0.5 * rng.standard_normal((n, rank)).astype(np.float32)
    X = Z @ B + 0.1 * rng.standard_normal((n, m)).astype(np.float32)
    return X.astype(np.float32), y.astype(np.int64)


def run_fit(x_path, y_path, out_dir, json_path, extra):
    cmd = [sys.executable, "-m", "tinydl", "fit", x_path, "--labels", y_path, "-o", out_dir,
           "--trace-memory", "--quiet", "--json", json_path] + extra
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH",
                                                                             ""))
    import psutil
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # the child's resident set, polled (ru_maxrss would include the parent's pages at fork)
    ps, peak_rss = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak_rss = max(peak_rss, ps.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.02)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if proc.returncode:
        raise SystemExit(f"tinydl fit failed ({proc.returncode}): {err.strip()}")
    import json
    with open(json_path) as fh:
        res = json.load(fh)
    res["maxrss_bytes"] = int(peak_rss)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4096, help="samples in the short stream")
    ap.add_argument("--factor", type=int, default=4, help="the long stream is this many "
                    "times longer")
    ap.add_argument("--m", type=int, default=5625, help="features (synthetic data)")
    ap.add_argument("--classes", type=int, default=19)
    ap.add_argument("--data", help="a real .npz (X_train, y_train) instead of synthetic data")
    ap.add_argument("--profile", default="x86-64-host")
    ap.add_argument("--memory", default=None, help="memory budget passed to the plan")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="tinydl-mem-") as tmp:
        if args.data:
            with np.load(args.data, allow_pickle=False) as z:
                X = z["X_train"].reshape(len(z["X_train"]), -1).astype(np.float32)
                y = z["y_train"].astype(np.int64)
            X, y = X[:args.n], y[:args.n]
            source = f"{args.data} (X_train, first {len(X)} rows; long stream repeats it)"
            Xl = np.concatenate([X] * args.factor)
            yl = np.concatenate([y] * args.factor)
        else:
            Xl, yl = synthetic(args.n * args.factor, args.m, args.classes)
            X, y = Xl[:args.n], yl[:args.n]
            source = (f"synthetic m={args.m}, {args.classes} classes (rank-40 class structure "
                      "plus noise, seed 0)")
        paths = {}
        for name, (a, b) in (("short", (X, y)), ("long", (Xl, yl))):
            paths[name] = (os.path.join(tmp, f"{name}_X.npy"), os.path.join(tmp, f"{name}_y.npy"))
            np.save(paths[name][0], a)
            np.save(paths[name][1], b)
        del X, y, Xl, yl
        extra = ["--profile", args.profile] + (["--memory", args.memory] if args.memory else [])
        res = {}
        for name in ("short", "long"):
            res[name] = run_fit(*paths[name], os.path.join(tmp, f"model-{name}"),
                                os.path.join(tmp, f"{name}.json"), extra)
    ps, pl = res["short"]["peak_traced_bytes"], res["long"]["peak_traced_bytes"]
    pred = int(res["short"]["plan"]["footprint_bytes"])
    plan = res["short"]["plan"]
    out = dict(peak_short_bytes=ps, peak_long_bytes=pl, predicted_bytes=pred,
               paper_formula_bytes=int(plan["paper_bytes"]),
               long_over_short=pl / ps, short_over_predicted=ps / pred,
               long_over_predicted=pl / pred,
               maxrss_short_bytes=res["short"]["maxrss_bytes"],
               maxrss_long_bytes=res["long"]["maxrss_bytes"],
               samples_short=res["short"]["samples"], samples_long=res["long"]["samples"],
               plan={k: plan[k] for k in ("l", "k", "alpha", "hidden_layer_sizes", "window",
                                          "n_batch", "chunk", "dtype", "profile")},
               footprint_parts=plan["footprint"], data=source, blas_threads=blas_threads())
    print(f"tinydl fit peak memory (tracemalloc), data: {source}")
    print(f"plan: {out['plan']}")
    rows = [("short stream", out["samples_short"], f"{ps:,}", f"{ps / pred:.3f}",
             f"{out['maxrss_short_bytes']:,}"),
            ("long stream", out["samples_long"], f"{pl:,}", f"{pl / pred:.3f}",
             f"{out['maxrss_long_bytes']:,}"),
            ("plan prediction", "-", f"{pred:,}", "1.000", "-"),
            ("paper formula m*l+l*n+|param|", "-", f"{out['paper_formula_bytes']:,}", "-",
             "-")]
    print_table(["", "samples", "peak bytes", "/ predicted", "max RSS (whole process)"], rows)
    ok_len = abs(pl / ps - 1) <= 0.10
    ok_pred = max(abs(ps / pred - 1), abs(pl / pred - 1)) <= 0.15
    print(f"long / short = {pl / ps:.3f} (target within 10%: {'yes' if ok_len else 'NO'}); "
          f"worst peak / predicted = {max(ps, pl) / pred:.3f}, best "
          f"{min(ps, pl) / pred:.3f} (target within 15%: {'yes' if ok_pred else 'NO'})")
    if args.json:
        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
