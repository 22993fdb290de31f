"""SparseSep compression: accuracy, memory and speed before and after, per model and method.

    python benchmarks/compress.py [--json PATH] [--dsa FILE] [--uji FILE] [--quick]

Models (each trained here, briefly, then compressed without retraining):

* ``digits-mlp`` 64-512-256-10 and ``digits-mlp-large`` 64-2048-2048-10 on the bundled UCI
  digits, and ``digits-cnn`` (1x8x8 -> conv 16 -> pool -> conv 32 -> pool -> 64 -> 10);
* ``dsa-mlp`` 5625-2000-500-19 on Daily and Sports and ``uji-mlp`` 520-512-256-C on
  UJIIndoorLoc, when their files exist (``--dsa``, ``--uji``; default ``../shared/data``);
  an absent file is reported and the model skipped.

Splits: each training set is split (seed 0) into a training part and a **validation** part
(300 samples for digits, 15% otherwise) that the compiler searches on; accuracies reported are
on the separate **test** split.  Methods ``svd`` and ``sparse`` at budgets 1% and 5% (validation
accuracy points), plus ``svd-weights`` (plain SVD of W, not data-aware) at 5% for contrast.
Speed-ups time the same NumPy layer code on the original and compressed layers (one BLAS
thread), at batch 1 and 256.  The layer-at-a-time runtime's predicted and measured
(tracemalloc) peaks are printed for every compressed model at batch 1 and 256.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402

from benchmarks._common import blas_threads, print_table, write_json  # noqa: E402
from tinydl.compress import SparseRuntime, compress_model, from_network, save_model  # noqa: E402
from tinydl.data import load_dataset  # noqa: E402
from tinydl.nn import CNNClassifier, MLPClassifier  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data"))


def split(X, y, n_val, seed=0):
    perm = np.random.default_rng(seed).permutation(len(X))
    return X[perm[n_val:]], y[perm[n_val:]], X[perm[:n_val]], y[perm[:n_val]]


def per_call(fn, min_time=0.3, max_calls=2000):
    """Median over 5 rounds of the mean seconds per call (rounds of >= min_time / 5)."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-6)
    calls = int(min(max_calls, max(1, min_time / 5 / one)))
    rounds = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter() - t0) / calls)
    return float(np.median(rounds))


def models(args):
    """Yield (name, trained CompressedModel, X_val, y_val, X_test, y_test, train seconds)."""
    d = load_dataset("digits")
    X, Xt = d.X_train / 16.0, d.X_test / 16.0
    Xtr, ytr, Xv, yv = split(X, d.y_train, 300)
    ep = 10 if args.quick else 30
    specs = [("digits-mlp", lambda: MLPClassifier((512, 256), loss="cross_entropy",
                                                  optimizer="adam", learning_rate=1e-3,
                                                  epochs=ep, batch_size=32)),
             ("digits-mlp-large", lambda: MLPClassifier((2048, 2048), loss="cross_entropy",
                                                        optimizer="adam", learning_rate=3e-4,
                                                        epochs=max(5, ep // 3), batch_size=64)),
             ("digits-cnn", lambda: CNNClassifier((1, 8, 8), ((16, 3, 2), (32, 3, 2)), (64,),
                                                  loss="cross_entropy", optimizer="adam",
                                                  learning_rate=2e-3, epochs=ep))]
    for name, make in specs:
        t0 = time.perf_counter()
        clf = make().fit(Xtr, ytr)
        yield name, from_network(clf), Xv, yv, Xt, d.y_test, time.perf_counter() - t0
    for name, path, hidden in (("dsa-mlp", args.dsa, (2000, 500)),
                               ("uji-mlp", args.uji, (512, 256))):
        if not os.path.isfile(path):
            print(f"[skip] {name}: data file {path} is absent", flush=True)
            continue
        ds = load_dataset(path)
        if ds.X_test is None:
            print(f"[skip] {name}: {path} has no test split", flush=True)
            continue
        mu, sd = ds.X_train.mean(0), ds.X_train.std(0) + 1e-6
        Xa, Xta = ((ds.X_train - mu) / sd).astype(np.float32), ((ds.X_test - mu) / sd).astype(
            np.float32)
        Xtr, ytr, Xv, yv = split(Xa, ds.y_train, int(0.15 * len(Xa)))
        t0 = time.perf_counter()
        clf = MLPClassifier(hidden, loss="cross_entropy", optimizer="adam", learning_rate=1e-3,
                            epochs=5 if args.quick else 15, batch_size=64).fit(Xtr, ytr)
        yield name, from_network(clf), Xv, yv, Xta, ds.y_test, time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--dsa", default=os.path.join(DEFAULT_DATA, "dsa_subset20_f16.npz"))
    ap.add_argument("--uji", default=os.path.join(DEFAULT_DATA, "ujiindoorloc.npz"))
    ap.add_argument("--quick", action="store_true", help="fewer epochs")
    args = ap.parse_args(argv)
    print(f"BLAS threads: {blas_threads()}")
    rows, runtime_rows, out = [], [], []
    tmp = tempfile.mkdtemp(prefix="tinydl-compress-")
    for name, model, Xv, yv, Xt, yt, train_s in models(args):
        acc_before = model.score(Xt, yt)
        print(f"\n== {name}: {model.nbytes:,} bytes, trained in {train_s:.1f} s, test accuracy "
              f"{100 * acc_before:.2f}%", flush=True)
        X1 = model._check_input(Xt[:1])
        X256 = model._check_input(np.resize(Xt, (256, Xt.shape[1])))
        t_b1 = per_call(lambda: model.forward_range(X1))
        t_b256 = per_call(lambda: model.forward_range(X256), min_time=1.0)
        runs = [("svd", 0.01, True), ("svd", 0.05, True), ("sparse", 0.01, True),
                ("sparse", 0.05, True), ("svd-weights", 0.05, False)]
        for method, budget, aware in runs:
            t0 = time.perf_counter()
            cm, rep = compress_model(model, Xv, yv, budget,
                                     method="svd" if method == "svd-weights" else method,
                                     data_aware=aware)
            comp_s = time.perf_counter() - t0
            acc_after = cm.score(Xt, yt)
            s1 = t_b1 / per_call(lambda: cm.forward_range(X1))
            s256 = t_b256 / per_call(lambda: cm.forward_range(X256), min_time=1.0)
            choices = "; ".join(f"L{r.index}: {r.choice}" for r in sorted(rep.layers,
                                                                          key=lambda r: r.index))
            rec = {"model": name, "method": method, "budget": budget,
                   "accuracy_before": acc_before, "accuracy_after": acc_after,
                   "val_accuracy_before": rep.accuracy_before,
                   "val_accuracy_after": rep.accuracy_after,
                   "memory_reduction": rep.memory_reduction, "bytes_before": rep.bytes_before,
                   "bytes_after": rep.bytes_after, "flops_reduction": rep.flops_reduction,
                   "speedup_b1": s1, "speedup_b256": s256, "compile_s": comp_s,
                   "layers": choices}
            # the layer-at-a-time runtime on the compressed file
            path = os.path.join(tmp, f"{name}-{method}-{budget}.npz")
            save_model(cm, path)
            rt = SparseRuntime(path)
            for b, Xb in ((1, X1), (256, X256)):
                rt.run(Xb, measure=True)
                pred, meas = rt.predict_peak_bytes(b), rt.last_peak_bytes
                rec[f"runtime_peak_predicted_b{b}"] = pred
                rec[f"runtime_peak_measured_b{b}"] = meas
                runtime_rows.append([name, method, f"{budget:.2f}", b, f"{pred:,}", f"{meas:,}",
                                     f"{100 * (meas - pred) / pred:+.1f}%",
                                     f"{rt.model_bytes:,}", f"{model.nbytes:,}"])
            assert np.allclose(rt.run(Xt[:64]), cm.decision_function(Xt[:64]), atol=1e-4)
            out.append(rec)
            rows.append([name, method, f"{budget:.2f}", f"{100 * acc_before:.2f}",
                         f"{100 * acc_after:.2f}", f"{rep.memory_reduction:.1f}x",
                         f"{s1:.1f}x", f"{s256:.1f}x", f"{comp_s:.1f}"])
            print(f"  {method:11s} {budget:.2f}: test {100 * acc_before:.2f}% -> "
                  f"{100 * acc_after:.2f}%, {rep.memory_reduction:.1f}x less memory, speed-up "
                  f"{s1:.1f}x (b1) {s256:.1f}x (b256); {choices}", flush=True)
    print("\nAccuracy on the test split; memory = all stored arrays (values, indices, pointers)")
    print_table(["model", "method", "budget", "acc before %", "acc after %", "memory",
                 "speed-up b1", "speed-up b256", "compile s"], rows)
    print("\nLayer-at-a-time runtime: predicted vs measured (tracemalloc) peak bytes")
    print_table(["model", "method", "budget", "batch", "predicted", "measured", "error",
                 "compressed model", "original model"], runtime_rows)
    mlps = [r for r in out if r["budget"] == 0.05 and r["method"] in ("svd", "sparse")
            and "mlp" in r["model"]]
    if mlps:
        for meth in ("svd", "sparse"):
            sel = [r for r in mlps if r["method"] == meth]
            print(f"MLPs at the 5% budget, {meth}: mean memory reduction "
                  f"{np.mean([r['memory_reduction'] for r in sel]):.1f}x (paper 11.3x), mean "
                  f"speed-up at batch 1 {np.mean([r['speedup_b1'] for r in sel]):.1f}x "
                  f"(paper 13.3x)")
    for r in out:
        if r["method"] == "sparse":
            s = next(q for q in out if q["model"] == r["model"] and q["method"] == "svd"
                     and q["budget"] == r["budget"])
            print(f"{r['model']} {r['budget']:.2f}: sparse {r['bytes_after']:,} bytes "
                  f"(val {100 * r['val_accuracy_after']:.2f}%) vs svd {s['bytes_after']:,} "
                  f"(val {100 * s['val_accuracy_after']:.2f}%)")
    if args.json:
        write_json(args.json, out)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
