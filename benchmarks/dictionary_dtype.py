"""Dictionary storage in float32, float16 and int8 (a float32 scale per atom): accuracy and
transform throughput on the two shared data sets.

The same learner (``TinyDLClassifier`` defaults, ``l=100``, ``k=20``, seed 0) streams the
training split in a seeded shuffled order (``numpy.random.default_rng(0)``), once per storage
dtype; compute stays float32.  Reported per dtype: test accuracy, the dictionary's bytes, and
the transform's throughput on the test rows (execution phase, samples per second, batches of
256 and one sample at a time), all three dtypes timed in this one process, interleaved
(median of ``--repeat`` rounds).  The float16 / int8 path is the NumPy reference
(:mod:`hal.backends.numpy.stored`: 16 atoms decoded at a time); float32 runs on the
automatic backend.

Data: UJIIndoorLoc (UCI's split, the documented RSSI conversion of ``tinydl.data.load_real``);
the Daily and Sports subset on ``tinydl reproduce``'s split (20% stratified test, seed 0).
Targets (issue 18): accuracy within 0.5 point of float32, throughput no lower.

    python benchmarks/dictionary_dtype.py --json dictionary_dtype.json
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402

from benchmarks._common import SHARED_DATA, print_table, shared_file, write_json  # noqa: E402

DTYPES = ("float32", "float16", "int8")


def load(name, limit=None):
    from tinydl.data import load_real, split_dataset
    if name == "ujiindoorloc":
        ds = load_real(os.path.join(SHARED_DATA, "ujiindoorloc.npz"))
    else:
        ds = split_dataset(load_real(os.path.join(SHARED_DATA, "dsa_subset20_f16.npz")), 0.2, 0)
    order = np.random.default_rng(0).permutation(len(ds.y_train))
    if limit:
        order = order[:limit]
    return (ds.X_train[order].astype(np.float32), ds.y_train[order],
            ds.X_test.astype(np.float32), ds.y_test)


def fit(X, y, dictionary_dtype, **kw):
    from tinydl.learner import TinyDLClassifier
    clf = TinyDLClassifier(dictionary_dtype=dictionary_dtype, seed=0, **kw)
    classes = np.unique(y)
    for s in range(0, len(X), 256):
        clf.partial_fit(X[s:s + 256], y[s:s + 256], classes=classes)
    return clf.finish()


def throughput(clf, X, repeat):
    """Samples per second of the transform (standardized rows in, compact codes out):
    batches of 256, and one sample at a time (the first 200 rows)."""
    Z = clf.standardizer_.transform(X) if clf.standardizer_.enabled else X
    tr = clf.transform_
    tr.transform(Z[:256], dense=False)  # the execution plan, made once
    t0 = time.perf_counter()
    for s in range(0, len(Z), 256):
        tr.transform(Z[s:s + 256], dense=False)
    batch = len(Z) / (time.perf_counter() - t0)
    n1 = min(200, len(Z))
    t0 = time.perf_counter()
    for i in range(n1):
        tr.transform(Z[i:i + 1], dense=False)
    one = n1 / (time.perf_counter() - t0)
    return batch, one


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--limit", type=int, help="stream only this many training rows")
    ap.add_argument("--only", choices=("ujiindoorloc", "dsa"))
    args = ap.parse_args(argv)
    out = {}
    for name in ("ujiindoorloc", "dsa"):
        if args.only and name != args.only:
            continue
        src = shared_file(name)
        if src is None:
            continue
        X, y, Xte, yte = load(name, args.limit)
        models = {dt: fit(X, y, dt) for dt in DTYPES}
        acc = {dt: float(models[dt].score(Xte, yte)) for dt in DTYPES}
        rounds = {dt: [] for dt in DTYPES}
        for _ in range(args.repeat):  # interleaved: the machine's load hits all alike
            for dt in DTYPES:
                rounds[dt].append(throughput(models[dt], Xte, 1))
        res = {}
        for dt in DTYPES:
            b = float(np.median([r[0] for r in rounds[dt]]))
            o = float(np.median([r[1] for r in rounds[dt]]))
            res[dt] = dict(accuracy=acc[dt], dictionary_bytes=int(
                models[dt].transform_._D.nbytes + (0 if models[dt].transform_._D_scale is None
                                                   else models[dt].transform_._D_scale.nbytes)),
                batch_samples_per_s=b, single_samples_per_s=o,
                accuracy_delta_points=100 * (acc[dt] - acc["float32"]),
                batch_throughput_ratio=b / res["float32"]["batch_samples_per_s"]
                if dt != "float32" else 1.0,
                single_throughput_ratio=o / res["float32"]["single_samples_per_s"]
                if dt != "float32" else 1.0,
                backend=models[dt].transform_._be.name)
        out[name] = res
        print(f"{name}: {len(X)} training rows streamed shuffled, {len(Xte)} test rows")
        print_table(["dictionary", "accuracy", "vs float32 (points)", "dictionary bytes",
                     "batch samples/s", "x float32", "one-at-a-time samples/s", "x float32"],
                    [(dt, f"{r['accuracy']:.4f}", f"{r['accuracy_delta_points']:+.2f}",
                      f"{r['dictionary_bytes']:,}", f"{r['batch_samples_per_s']:,.0f}",
                      f"{r['batch_throughput_ratio']:.2f}",
                      f"{r['single_samples_per_s']:,.0f}",
                      f"{r['single_throughput_ratio']:.2f}") for dt, r in res.items()])
    if args.json:
        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
