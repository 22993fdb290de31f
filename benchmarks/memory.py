"""Peak memory of ``tinydl fit`` on a stream and on a stream 4x longer, against the plan and
against the paper's formula.

First ``tinydl plan`` makes the plan (the paper's setting, ``l=100``, ``k=20``, by default
for each dictionary storage dtype (``--dictionary-dtypes``, float32 first: the main row), with
the memory budget ``--budget-factor`` (1.5 / 1.05) times the paper's formula in bytes of that
stored dtype, so the customizer must choose policies that fit it: no raw-sample reservoir,
chunk and workspaces sized to it; see :func:`make_plan`); then the real command
(``python -m tinydl fit ... --plan P --trace-memory --json``) runs in a child process on
two ``.npy`` streams of the same data distribution, one ``--factor`` times longer, and compares:

* ``peak_short_bytes`` / ``peak_long_bytes``: tracemalloc's peak in the child (every NumPy
  buffer and Python object the run allocates after its imports) less the data file's bytes
  held in memory (the labels, read whole: ``stream_resident_bytes``); the raw peaks are
  ``peak_traced_short_bytes`` / ``peak_traced_long_bytes``,
* ``predicted_bytes``: the footprint the customizer's plan predicted before the run
  (:func:`tinydl.customize.plan_footprint`),
* ``paper_bytes``: the paper's formula ``m*l + l*n + |param|`` in bytes of the stored dtype
  (the dictionary's ``m*l`` in its storage dtype, the rest in the compute dtype),
* ``buffers``: each predicted buffer (:mod:`tinydl.footprint`) with the bytes measured on the
  learner after the run where it can be read off (``measured_bytes``; transients cannot),
* also the child's peak resident set size (polled every 20 ms; interpreter, libraries and
  the memory-mapped file's cached pages included) for reference.

Targets (issue 18): peak <= 1.5x ``paper_bytes``, the two peaks within 10% of each other,
each within 5% of the prediction.

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


def _env():
    return dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH",
                                                                              ""))


def make_plan(args, m, n_classes, path, dictionary_dtype):
    """The customizer's plan at the paper's setting (``l``, ``k``, ``window`` fixed) with the
    dictionary stored in ``dictionary_dtype``, written to ``path`` for ``tinydl fit --plan``.
    Returns ``(plan, budget_bytes)``.

    The storage dtype is fixed by the caller, so the budget is not circular: by default it is
    ``--budget-factor`` (1.5 / 1.05: the issue's 1.5x target over the 5% the prediction may
    miss by) times the paper's formula in bytes of that stored dtype, at |param| of the
    network the plan picks: starting from the unconstrained plan's network, re-planned until
    the plan's own formula gives the budget it was made for (a smaller budget picks a smaller
    network, whose formula is smaller).  When no plan fits, the plan with the least predicted
    footprint is taken (the budget then is that least footprint).  ``--memory`` sets the
    budget instead."""
    from tinydl.customize import paper_bytes, plan
    from tinydl.errors import BudgetInfeasible
    fixed = dict(l_choices=(args.l,), k_choices=(args.k,), window_choices=(args.window,),
                 dictionary_dtype=dictionary_dtype)

    def formula(q):
        return int(args.budget_factor * paper_bytes(m, args.l, args.window, _n_params(q),
                                                    dictionary_dtype=dictionary_dtype))

    if args.memory is not None:
        from tinydl.cli._common import parse_bytes
        budget = parse_bytes(args.memory)
        return _save(plan(m, n_classes, args.profile, memory_bytes=budget, **fixed), path), \
            budget
    p = plan(m, n_classes, args.profile, **fixed)
    for _ in range(8):
        budget = formula(p)
        try:
            p = plan(m, n_classes, args.profile, memory_bytes=budget, **fixed)
        except BudgetInfeasible as exc:
            budget = int(exc.smallest["memory_bytes"])
            p = plan(m, n_classes, args.profile, memory_bytes=budget, **fixed)
            break
        if formula(p) >= budget:
            break
    return _save(p, path), budget


def _save(p, path):
    p.save(path)
    return p


def _n_params(p):
    sizes = (p.l,) + tuple(p.hidden_layer_sizes) + (p.n_classes,)
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def run_fit(x_path, y_path, out_dir, json_path, extra):
    cmd = [sys.executable, "-m", "tinydl", "fit", x_path, "--labels", y_path, "-o", out_dir,
           "--trace-memory", "--quiet", "--json", json_path] + extra
    env = _env()
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


SUMMARY = ("peak_short_bytes", "peak_long_bytes", "predicted_bytes", "paper_bytes",
           "peak_over_paper", "long_over_short", "short_over_predicted", "long_over_predicted")


def measure(args, paths, tmp, m, n_classes, dictionary_dtype, source):
    """Plan with the dictionary stored in ``dictionary_dtype``, run ``tinydl fit`` on the short
    and the long stream, and return the measured-against-predicted record."""
    plan_path = os.path.join(tmp, f"plan-{dictionary_dtype}.json")
    _, budget = make_plan(args, m, n_classes, plan_path, dictionary_dtype)
    res = {}
    for name in ("short", "long"):
        tag = f"{name}-{dictionary_dtype}"
        res[name] = run_fit(*paths[name], os.path.join(tmp, f"model-{tag}"),
                            os.path.join(tmp, f"{tag}.json"), ["--plan", plan_path])
    # the learner's peak: tracemalloc's, less the data file's own bytes held in memory (the
    # labels, read whole; the .npy features are memory-mapped)
    raw_s, raw_l = res["short"]["peak_traced_bytes"], res["long"]["peak_traced_bytes"]
    ps = res["short"].get("peak_learner_bytes", raw_s)
    pl = res["long"].get("peak_learner_bytes", raw_l)
    plan = res["short"]["plan"]
    pred = int(plan["footprint_bytes"])
    paper = int(plan["paper_bytes"])
    from tinydl.footprint import counted
    measured = res["long"].get("measured_buffers", {})
    buffers = []
    for b in plan.get("buffers", []):
        row = dict(b, counted=b in counted(plan["buffers"]))
        if b["phase"] == "steady" and b["name"] in measured:
            row["measured_bytes"] = int(measured[b["name"]])
        buffers.append(row)
    return dict(peak_short_bytes=ps, peak_long_bytes=pl, predicted_bytes=pred,
                peak_traced_short_bytes=raw_s, peak_traced_long_bytes=raw_l,
                stream_resident_bytes={k: res[k].get("stream_resident_bytes") for k in res},
                paper_bytes=paper, paper_formula_bytes=paper,
                budget_bytes=None if budget is None else int(budget),
                peak_over_paper=max(ps, pl) / paper,
                long_over_short=pl / ps, short_over_predicted=ps / pred,
                long_over_predicted=pl / pred,
                maxrss_short_bytes=res["short"]["maxrss_bytes"],
                maxrss_long_bytes=res["long"]["maxrss_bytes"],
                samples_short=res["short"]["samples"], samples_long=res["long"]["samples"],
                plan={k: plan[k] for k in ("l", "k", "alpha", "hidden_layer_sizes", "window",
                                           "n_batch", "chunk", "dtype", "profile",
                                           "dictionary_dtype", "rebuild", "window_policy",
                                           "standardize", "n_standardize", "omp_batch",
                                           "dt_copy")},
                footprint_parts=plan["footprint"], buffers=buffers,
                unpredicted_measured={k: v for k, v in measured.items()
                                      if k not in {b["name"] for b in buffers}},
                data=source, blas_threads=blas_threads())


def report(dictionary_dtype, out, verbose=True):
    """Print one storage dtype's peaks against its prediction and its ``paper_bytes``."""
    ps, pl = out["peak_short_bytes"], out["peak_long_bytes"]
    pred, paper = out["predicted_bytes"], out["paper_bytes"]
    print(f"\ndictionary stored as {dictionary_dtype}; plan: {out['plan']}")
    rows = [("short stream", out["samples_short"], f"{ps:,}", f"{ps / pred:.3f}",
             f"{out['maxrss_short_bytes']:,}"),
            ("long stream", out["samples_long"], f"{pl:,}", f"{pl / pred:.3f}",
             f"{out['maxrss_long_bytes']:,}"),
            ("plan prediction", "-", f"{pred:,}", "1.000", "-"),
            ("paper formula m*l+l*n+|param|", "-", f"{paper:,}", f"{paper / pred:.3f}", "-")]
    print_table(["", "samples", "peak bytes", "/ predicted", "max RSS (whole process)"], rows)
    if verbose:
        print("per buffer (steady buffers measured on the learner after the long run):")
        brows = [(b["name"], "x".join(map(str, b["shape"])) or "-", b["dtype"], b["term"],
                  b["phase"], f"{b['bytes']:,}",
                  f"{b['measured_bytes']:,}" if "measured_bytes" in b else "-")
                 for b in out["buffers"] if b["counted"]]
        print_table(["buffer", "shape", "dtype", "term", "phase", "predicted", "measured"],
                    brows)
    ok_len = abs(pl / ps - 1) <= 0.10
    ok_pred = max(abs(ps / pred - 1), abs(pl / pred - 1)) <= 0.05
    ok_paper = max(ps, pl) <= 1.5 * paper
    print(f"[{dictionary_dtype}] long / short = {pl / ps:.3f} (target within 10%: "
          f"{'yes' if ok_len else 'NO'}); worst peak / predicted = {max(ps, pl) / pred:.3f}, "
          f"best {min(ps, pl) / pred:.3f} (target within 5%: {'yes' if ok_pred else 'NO'}); "
          f"peak / paper_bytes = {max(ps, pl) / paper:.3f} (target <= 1.5: "
          f"{'yes' if ok_paper else 'NO'})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4096, help="samples in the short stream")
    ap.add_argument("--factor", type=int, default=4, help="the long stream is this many "
                    "times longer")
    ap.add_argument("--m", type=int, default=5625, help="features (synthetic data)")
    ap.add_argument("--classes", type=int, default=19)
    ap.add_argument("--data", help="a real .npz (X_train, y_train) instead of synthetic data")
    ap.add_argument("--profile", default="x86-64-host")
    ap.add_argument("--memory", default=None, help="memory budget passed to the plan "
                    "(default: --budget-factor x the paper's formula in the stored dtype)")
    ap.add_argument("--budget-factor", type=float, default=1.5 / 1.05)
    ap.add_argument("--dictionary-dtypes", default="float32,float16,int8",
                    help="comma-separated storage dtypes, one row each; the first is the main "
                    "row (the top-level JSON keys), all are summarized under 'rows'")
    ap.add_argument("--l", type=int, default=100)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--window", type=int, default=2048)
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
        m_, C_ = int(np.load(paths["short"][0], mmap_mode="r").shape[1]), \
            int(len(np.unique(np.load(paths["short"][1]))))
        rows = {}
        for dd in args.dictionary_dtypes.split(","):
            rows[dd] = measure(args, paths, tmp, m_, C_, dd, source)
    main_dd = args.dictionary_dtypes.split(",")[0]
    out = dict(rows[main_dd])
    out["rows"] = {dd: {k: r[k] for k in SUMMARY} for dd, r in rows.items()}
    print(f"tinydl fit peak memory (tracemalloc), data: {source}")
    for dd, r in rows.items():
        report(dd, r, verbose=dd == main_dd)
    if args.json:
        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
