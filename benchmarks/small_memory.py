"""Learning in a small memory budget: ``tinydl plan --memory`` then ``tinydl fit --plan
--shuffle 0`` and ``tinydl evaluate``, against the raw network's accuracy from ``tinydl
reproduce``.

* UJIIndoorLoc at 256 KiB (``../shared/data/ujiindoorloc.npz``: UCI's training / validation
  split; ``tinydl fit`` and ``evaluate`` apply the documented RSSI conversion by a rule on the
  data, :func:`tinydl.data.stream.detect_preprocessing`);
* the Daily and Sports subset at 1 MiB, on the split ``tinydl reproduce`` uses
  (:func:`tinydl.data.split_dataset`, 20% stratified test, seed 0), written to a temporary
  ``.npz`` (features flattened to m = 5625) that the commands read.

Targets (issue 18): UJIIndoorLoc within 1 point of the raw network, Daily and Sports within 2.
The raw accuracies are those of ``tinydl reproduce`` (``--reproduce-json`` reads them from its
JSON; by default the figures of the last full run, :data:`RAW_ACCURACY`).

    python benchmarks/small_memory.py --json small_memory.json
    python benchmarks/small_memory.py --seeds 5   # and the spread over five shuffle seeds
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402

from benchmarks._common import REPO_ROOT, SHARED_DATA, shared_file, write_json  # noqa: E402

#: test accuracy of the raw-feature network in `tinydl reproduce` (full protocol)
RAW_ACCURACY = {"ujiindoorloc": 0.913, "dsa": 0.942}
#: (data set, memory budget, allowed gap in points)
CASES = (("ujiindoorloc", "256KiB", 1.0), ("dsa", "1MiB", 2.0))


def _env():
    return dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH",
                                                                              ""))


class Failed(Exception):
    """A command failed (an infeasible plan, for one): its message."""


def _tinydl(*args):
    cmd = [sys.executable, "-m", "tinydl", *map(str, args)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    if r.returncode:
        raise Failed(f"{' '.join(cmd[3:5])} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout, time.perf_counter() - t0


def dsa_file(tmp):
    """The Daily and Sports subset on reproduce's split, as a flat ``.npz``."""
    from tinydl.data import load_real, split_dataset
    ds = split_dataset(load_real(os.path.join(SHARED_DATA, "dsa_subset20_f16.npz")), 0.2, 0)
    path = os.path.join(tmp, "dsa_split.npz")
    np.savez(path, X_train=ds.X_train.astype(np.float32), y_train=ds.y_train,
             X_test=ds.X_test.astype(np.float32), y_test=ds.y_test)
    return path


def _gap_words(points):
    """``gap_points`` (raw minus TinyDL) in words: "1.20 points below", "1.92 points above"."""
    return f"{abs(points):.2f} points {'below' if points >= 0 else 'above'}"


def run_case(name, path, memory, tmp, extra=(), seed=0):
    """Plan for ``memory``, fit with ``--shuffle seed --seed seed``, evaluate."""
    tag = f"{name}-{memory}"   # one directory per (data set, budget): the sweep reruns a set
    plan_path = os.path.join(tmp, f"{tag}-plan.json")
    if not os.path.exists(plan_path):  # the plan reads no seed: one per (data set, budget)
        _tinydl("plan", "--data", path, "--memory", memory, "-o", plan_path)
    with open(plan_path) as fh:
        plan = json.load(fh)
    tag = f"{tag}-s{seed}"
    model = os.path.join(tmp, f"{tag}-model")
    fit_json = os.path.join(tmp, f"{tag}-fit.json")
    _, fit_s = _tinydl("fit", path, "--plan", plan_path, "--shuffle", seed, "--seed", seed,
                       "-o", model, "--quiet", "--json", fit_json, *extra)
    with open(fit_json) as fh:
        fit = json.load(fh)
    ev_json = os.path.join(tmp, f"{tag}-eval.json")
    _tinydl("evaluate", model, "--data", path, "--json", ev_json)
    with open(ev_json) as fh:
        ev = json.load(fh)
    keys = ("l", "k", "hidden_layer_sizes", "window", "n_batch", "batch_size", "chunk",
            "dictionary_dtype", "product_rows", "decode_rows", "packed_gram",
            "rebuild", "window_policy", "standardize", "n_standardize", "dt_copy",
            "optimizer", "sparse_product", "footprint_bytes", "paper_bytes")
    # what the run resolved: the window policy ("auto": sliding unless the labels arrive in
    # blocks), the network updates made
    ran = dict(window_policy=fit["params"]["window_policy"],
               standardize=fit["params"]["standardize"], n_updates=fit["n_updates"],
               n_atoms=fit["n_atoms"])
    if "peak_learner_bytes" in fit:  # --trace-memory: the learner's measured peak
        ran["peak_learner_bytes"] = fit["peak_learner_bytes"]
    return dict(memory=memory, plan={k: plan.get(k) for k in keys}, fit=ran,
                accuracy=float(ev["accuracy"]), n_test=int(ev["n_samples"]),
                fit_seconds=fit_s, commands=[
                    f"tinydl plan --data {path} --memory {memory} -o p.json",
                    f"tinydl fit {path} --plan p.json --shuffle {seed} --seed {seed} "
                    "-o MODEL",
                    f"tinydl evaluate MODEL --data {path}"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--reproduce-json", metavar="PATH",
                    help="a `tinydl reproduce --json` result to read the raw accuracies from")
    ap.add_argument("--only", choices=[c[0] for c in CASES])
    ap.add_argument("--sweep", metavar="BUDGET", nargs="*", default=(),
                    help="further memory budgets (e.g. 512KiB 1MiB) to run each data set at, "
                         "reported under 'sweep' (what accuracy each budget reaches)")
    ap.add_argument("--trace-memory", action="store_true",
                    help="run `tinydl fit --trace-memory` (slower): the learner's measured "
                         "peak beside the plan's footprint")
    ap.add_argument("--seeds", type=int, default=1, metavar="N",
                    help="also run seeds 1 .. N-1 (--shuffle s --seed s, the same plan, no "
                         "memory trace): the spread a single run's accuracy has; the target "
                         "is judged on seed 0, the issue's command")
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error(f"--seeds must be >= 1, got {args.seeds}")
    extra = ("--trace-memory",) if args.trace_memory else ()
    raw = dict(RAW_ACCURACY)
    if args.reproduce_json:
        with open(args.reproduce_json) as fh:
            rep = json.load(fh)
        for fname, r in (rep.get("results") or rep).items():
            if isinstance(r, dict) and "accuracy_raw" in r:
                raw["dsa" if "dsa" in fname.lower() else "ujiindoorloc"] = r["accuracy_raw"]
    out = {"raw_accuracy": raw, "raw_source": args.reproduce_json or "RAW_ACCURACY"}
    with tempfile.TemporaryDirectory(prefix="tinydl-small-") as tmp:
        for name, memory, gap in CASES:
            if args.only and name != args.only:
                continue
            src = shared_file(name)
            if src is None:
                continue
            path = src if name == "ujiindoorloc" else dsa_file(tmp)
            for extra_mem in args.sweep:
                try:
                    sw = run_case(name, path, extra_mem, tmp, extra)
                except Failed as exc:
                    sw = dict(memory=extra_mem, ok=False, error=str(exc))
                    print(f"{name} at {extra_mem} (sweep): {exc}", flush=True)
                else:
                    p = sw["plan"]
                    print(f"{name} at {extra_mem} (sweep): accuracy {100 * sw['accuracy']:.2f}%"
                          f"; plan l={p['l']} k={p['k']} net={p['hidden_layer_sizes']} "
                          f"window={p['window']} D={p['dictionary_dtype']} footprint "
                          f"{p['footprint_bytes']:,} B; fit {sw['fit_seconds']:.0f} s",
                          flush=True)
                out.setdefault("sweep", {}).setdefault(name, []).append(sw)
            try:
                r = run_case(name, path, memory, tmp, extra)
            except Failed as exc:  # e.g. no plan fits: recorded, the next case still runs
                out[name] = dict(memory=memory, ok=False, error=str(exc),
                                 raw_accuracy=raw[name], target_points=gap)
                print(f"{name} at {memory}: {exc}", flush=True)
                continue
            r["raw_accuracy"] = raw[name]
            r["gap_points"] = 100 * (raw[name] - r["accuracy"])
            r["target_points"] = gap
            r["ok"] = r["gap_points"] <= gap
            out[name] = r
            p = r["plan"]
            print(f"{name} at {memory}: accuracy {100 * r['accuracy']:.2f}% vs raw "
                  f"{100 * raw[name]:.2f}% ({_gap_words(r['gap_points'])}; target "
                  f"<= {gap}: {'yes' if r['ok'] else 'NO'}); plan l={p['l']} k={p['k']} "
                  f"net={p['hidden_layer_sizes']} window={p['window']} "
                  f"D={p['dictionary_dtype']} rebuild={p['rebuild']} std={p['standardize']} "
                  f"window policy {r['fit']['window_policy']} "
                  f"footprint {p['footprint_bytes']:,} B"
                  + (f" (measured peak {r['fit']['peak_learner_bytes']:,} B)"
                     if "peak_learner_bytes" in r["fit"] else "")
                  + f"; fit {r['fit_seconds']:.0f} s",
                  flush=True)
            if args.seeds > 1:
                acc = [r["accuracy"]]
                for seed in range(1, args.seeds):
                    acc.append(run_case(name, path, memory, tmp, (), seed)["accuracy"])
                a = np.array(acc)
                sr = r["seeds"] = {"accuracy": acc, "mean": float(a.mean()),
                                   "sd": float(a.std(ddof=1)),
                                   "gap_points_mean": float(100 * (raw[name] - a.mean()))}
                print(f"{name} at {memory}, seeds 0-{args.seeds - 1}: accuracy "
                      f"{' '.join(f'{100 * x:.2f}' for x in acc)}%; mean "
                      f"{100 * sr['mean']:.2f}% (sd {100 * sr['sd']:.2f}), "
                      f"mean {_gap_words(sr['gap_points_mean'])} raw", flush=True)
    if args.json:
        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
