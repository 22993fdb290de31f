"""Does the cost model predict this machine?  Calibrate a profile here, in this run, then
compare hal.cost's predictions with measured times of the transform (three (m, l, k) settings,
the paper's 5625/100/20 among them) and of a training epoch (two network sizes).  Also prints
the jetson-tk1 profile's prediction for the paper's setting beside the paper's 0.81 ms/sample.

    python benchmarks/cost_model.py [--json PATH] [--quick] [--profile-out PATH]

JSON: {"transform": [{m, l, k, n, dtype, backend, predicted_s, measured_s, ratio}, ...],
       "training": [{layer_sizes, n_samples, batch_size, dtype, backend, predicted_s,
                     measured_s, ratio}, ...]}
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, repo_root)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

import hal  # noqa: E402
from hal.calibrate import calibrate, time_call  # noqa: E402
from hal.cost import predict_training_epoch, predict_transform  # noqa: E402

TRANSFORM_SETTINGS = [(5625, 100, 20), (617, 200, 10), (520, 100, 20)]
TRAINING_SETTINGS = [((100, 64, 32, 19), 4096), ((5625, 64, 32, 19), 2048)]
PAPER_MS_PER_SAMPLE = 0.81  # Table I, smart sensing pre-processing on a Jetson TK1


def bench_transform(profile, n, dtype, backend, repeats):
    rng = np.random.default_rng(0)
    be = hal.get_backend(backend)
    rows = []
    try:
        for m, l, k in TRANSFORM_SETTINGS:
            D = rng.standard_normal((l, m))
            D /= np.linalg.norm(D, axis=1, keepdims=True)
            X = rng.standard_normal((n, m)).astype(dtype)
            D = D.astype(dtype)
            G = D @ D.T
            meas = time_call(lambda: be.omp_encode(X, D, G, k), min_time=0.0, repeats=repeats)
            pred = predict_transform(profile, m, l, k, n, dtype, backend).seconds
            rows.append(dict(m=m, l=l, k=k, n=n, dtype=dtype, backend=backend,
                             predicted_s=pred, measured_s=meas, ratio=pred / meas))
    finally:
        be.close()
    return rows


def bench_training(profile, repeats, backend):
    try:
        from tinydl.nn import MLPClassifier
    except ImportError as exc:
        print(f"training: tinydl.nn.MLPClassifier is not importable ({exc}); skipped")
        return []
    rng = np.random.default_rng(1)
    rows = []
    for sizes, n in TRAINING_SETTINGS:
        X = rng.standard_normal((n, sizes[0])).astype(np.float32)
        y = rng.integers(0, sizes[-1], n)
        y[:sizes[-1]] = np.arange(sizes[-1])  # every class present: the output width is fixed
        clf = None

        def fit():
            nonlocal clf
            clf = MLPClassifier(hidden_layer_sizes=sizes[1:-1], batch_size=32, epochs=1,
                                learning_rate=0.01, momentum=0.9, dropout=0.0, loss="l2",
                                seed=0, dtype="float32").fit(X, y)
        meas = time_call(fit, min_time=0.0, repeats=repeats)
        pred = predict_training_epoch(profile, sizes, n, 32, "float32", backend).seconds
        rows.append(dict(layer_sizes=list(sizes), n_samples=n, batch_size=32, dtype="float32",
                         backend=backend, n_params=int(clf.n_params_), predicted_s=pred,
                         measured_s=meas, ratio=pred / meas))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    ap.add_argument("--quick", action="store_true", help="quick calibration and fewer repeats")
    ap.add_argument("--profile-out", metavar="PATH", help="also save the calibrated profile")
    ap.add_argument("--backend", default="numpy", help="backend timed (default numpy)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    profile, report = calibrate("bench-host", quick=args.quick, backends=[args.backend],
                                dtypes=(args.dtype,), progress=True)
    print(f"calibrated in {time.perf_counter() - t0:.1f} s: bandwidth "
          f"{profile.memory.bandwidth_gbs:.1f} GB/s; transform c1={profile.transform.c1_flops:.2f}"
          f" c2={profile.transform.c2_flops:.2f} calls/iter="
          f"{profile.transform.calls_per_iteration:.1f}; trainer calls/layer="
          f"{profile.training_model.calls_per_layer:.1f} "
          f"({profile.training_model.source})")
    if args.profile_out:
        profile.save(args.profile_out)
    repeats = 3 if args.quick else 5
    trans = bench_transform(profile, 2048, args.dtype, args.backend, repeats)
    train = bench_training(profile, repeats, args.backend)

    print(f"\n{'transform (m/l/k, n)':<28}{'predicted s':>13}{'measured s':>13}{'ratio':>8}")
    for r in trans:
        label = f"{r['m']}/{r['l']}/{r['k']}, n={r['n']}"
        print(f"{label:<28}{r['predicted_s']:>13.4f}{r['measured_s']:>13.4f}{r['ratio']:>8.2f}")
    print(f"\n{'training epoch (sizes, n)':<28}{'predicted s':>13}{'measured s':>13}{'ratio':>8}")
    for r in train:
        label = f"{'-'.join(map(str, r['layer_sizes']))}, n={r['n_samples']}"
        print(f"{label:<28}{r['predicted_s']:>13.4f}{r['measured_s']:>13.4f}{r['ratio']:>8.2f}")
    worst = max([abs(r["ratio"] - 1) for r in trans + train] or [0])
    print(f"\nworst |ratio - 1| = {worst:.2f} (target <= 0.25)")

    print("\njetson-tk1 profile (published/modeled figures), m=5625, l=100, k=20, float32:")
    from hal.profile import load_profile
    tk1 = load_profile("jetson-tk1")
    for be in tk1.backend_preference:
        if be not in tk1.backend_names:
            continue
        try:
            p = predict_transform(tk1, 5625, 100, 20, 1024, "float32", be)
        except hal.BackendUnavailable as exc:  # an optional extra missing here (mpi4py...)
            print(f"  {be:<16} skipped: {exc}")
            continue
        ms = p.seconds / 1024 * 1e3
        print(f"  {be:<16} predicted {ms:6.3f} ms/sample   paper (Table I) "
              f"{PAPER_MS_PER_SAMPLE:.2f} ms/sample   paper/predicted "
              f"{PAPER_MS_PER_SAMPLE / ms:5.1f}x")

    if args.json:
        text = json.dumps({"transform": trans, "training": train}, indent=2)
        from tinydl.io import atomic_write_text
        atomic_write_text(args.json, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
