"""C export on an emulated Cortex-M3: agreement with Python, accuracy, flash, RAM, instructions.

    python benchmarks/export.py [--json PATH] [--data DIR] [--limit N]

One row per exported model, each built with ``arm-none-eabi-gcc -O2 -mcpu=cortex-m3 -mthumb``
(picolibc, semihosting) and run under ``qemu-system-arm -M mps2-an385 -icount shift=0`` on the
whole test split:

* ``uji-tinydl-float32`` / ``uji-tinydl-int8``: a TinyDL model on UJIIndoorLoc (the shared
  file's training split through :func:`tinydl.data.uji_rssi_to_features`, streamed in a
  seeded shuffled order, settings of the default plan ``tinydl.customize.plan(520, C)``); int8
  calibrated on the first 1,024 rows of that stream; tested on UCI's 1,111 validation rows;
* ``dsa-compressed-float32``: a Daily and Sports MLP (5625-256-19, standardized features,
  stratified 80/20 split of the shared subset, seed 0) compressed by ``tinydl compress``'s
  compiler (SVD, 1 point of validation accuracy, 15% of the training part as validation),
  compared with :class:`tinydl.compress.SparseRuntime` on the test part;
  ``dsa-compressed-int8``: the same, int8 calibrated on the training part.

Columns: Python's and the export's accuracy, samples whose class differs, flash and RAM from
``arm-none-eabi-size`` (the export's objects) beside the export's prediction
(:mod:`tinydl.export.footprint`) and, for the TinyDL model, the plan's
(:func:`tinydl.customize.plan_export_footprint`), and instructions per inference counted
under emulation beside the HAL cost model's prediction for the ``cortex-m3`` profile
(seconds, and cycles at the profile's 100 MHz).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402

from benchmarks._common import print_table, write_json  # noqa: E402
from tinydl.export import export_c  # noqa: E402
from tinydl.export import toolchain as tc  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data"))
PROFILE = "cortex-m3"
CLOCK_HZ = 100e6  # the cortex-m3 profile's clock (platforms/cortex-m3.toml: 100 MHz)


def run_export(name, model, X_test, y_test, py_classes, py_scores, work, weights="float32",
               calibrate=None, limit=None):
    """Export, build, measure and run one model under QEMU; returns its row."""
    out = os.path.join(work, name)
    info = export_c(model, out, weights=weights, calibrate=calibrate)
    sizes = tc.arm_object_sizes(out, os.path.join(work, name + "-obj"))
    elf = tc.build_arm(out, os.path.join(work, name + "-elf"))
    n = len(X_test) if limit is None else min(limit, len(X_test))
    t0 = time.perf_counter()
    res = tc.run(elf, X_test[:n], os.path.join(work, name + "-run"), arm=True, timeout=3000)
    wall = time.perf_counter() - t0
    classes = res["classes"]
    diff = np.flatnonzero(classes != py_classes[:n])
    top2 = np.sort(py_scores[:n], axis=1)[:, -2:]
    row = {"model": name, "weights": weights, "n_test": int(n),
           "python_accuracy": float(np.mean(py_classes[:n] == y_test[:n])),
           "export_accuracy": float(np.mean(classes == y_test[:n])),
           "n_differ": int(len(diff)), "agreement": float(1 - len(diff) / max(n, 1)),
           "differ_python_margins": [float(top2[i, 1] - top2[i, 0]) for i in diff[:20]],
           "max_score_diff": float(np.abs(res["scores"] - py_scores[:n]).max()),
           "flash_bytes": sizes["flash_bytes"], "ram_bytes": sizes["ram_bytes"],
           "predicted_flash_bytes": info["flash_bytes"], "predicted_ram_bytes": info["ram_bytes"],
           "flash_error": sizes["flash_bytes"] / info["flash_bytes"] - 1,
           "ram_error": sizes["ram_bytes"] / info["ram_bytes"] - 1,
           "insns_per_inference": res["insns_per_inference"], "qemu_seconds": wall}
    return row


def uji_rows(args, work):
    from hal.cost import predict_inference, predict_transform
    from tinydl.customize import plan, plan_export_footprint
    from tinydl.data import uji_rssi_to_features
    path = os.path.join(args.data, "ujiindoorloc.npz")
    if not os.path.isfile(path):
        print(f"skipping UJIIndoorLoc: {path} is absent")
        return []
    with np.load(path, allow_pickle=False) as z:
        Xtr, ytr = uji_rssi_to_features(z["X_train"]), z["y_train"].astype(np.int64)
        Xte, yte = uji_rssi_to_features(z["X_test"]), z["y_test"].astype(np.int64)
    order = np.random.default_rng(0).permutation(len(Xtr))  # the shuffled stream
    Xtr, ytr = Xtr[order], ytr[order]
    n_classes = len(np.unique(ytr))
    p = plan(Xtr.shape[1], n_classes)  # the default plan (host profile, no budget)
    t0 = time.perf_counter()
    clf = p.learner(seed=0).fit(Xtr, ytr)
    print(f"UJIIndoorLoc: {p.l=}, {p.k=}, hidden {p.hidden_layer_sizes}, trained in "
          f"{time.perf_counter() - t0:.0f} s")
    py_classes = np.searchsorted(clf.classes_, clf.predict(Xte))
    py_scores = clf._net_outputs(Xte)
    # the export codes one sample at a time: the transform priced for one row (block=1; the
    # default prices a product on 64 zero-padded rows), then the network on k-sparse codes
    m = Xtr.shape[1]
    cost = predict_transform(PROFILE, m, p.l, p.k, 1, batch=1, block=1).seconds + \
        predict_inference(PROFILE, [p.l, *p.hidden_layer_sizes, n_classes],
                          sparse_input_k=p.k).seconds
    cost_default = predict_inference(PROFILE, [p.l, *p.hidden_layer_sizes, n_classes],
                                     transform=(m, p.l, p.k)).seconds
    rows = []
    for w in ("float32", "int8"):
        row = run_export(f"uji-tinydl-{w}", clf, Xte, yte, py_classes, py_scores, work, w,
                         calibrate=Xtr if w == "int8" else None, limit=args.limit)
        planned = plan_export_footprint(p, weights=w, profile=PROFILE)
        row.update(settings=f"l={p.l} k={p.k} hidden={tuple(p.hidden_layer_sizes)} "
                            f"(atoms learned: {clf.transform_.n_atoms_})",
                   plan_flash_bytes=planned["flash_bytes"], plan_ram_bytes=planned["ram_bytes"],
                   fits_profile=planned["fits"],
                   cost_model_seconds=cost, cost_model_cycles=cost * CLOCK_HZ,
                   cost_model_cycles_block64=cost_default * CLOCK_HZ)
        rows.append(row)
    return rows


def dsa_rows(args, work):
    from tinydl.compress import (
        BudgetInfeasible,
        SparseRuntime,
        compress_model,
        from_network,
        save_model,
    )
    from tinydl.compress.compiler import predict_time
    from tinydl.nn import MLPClassifier
    path = os.path.join(args.data, "dsa_subset20_f16.npz")
    if not os.path.isfile(path):
        print(f"skipping Daily and Sports: {path} is absent")
        return []
    with np.load(path, allow_pickle=False) as z:
        X = z["X"].reshape(len(z["X"]), -1).astype(np.float32)
        y = z["y"].astype(np.int64)
    from sklearn.model_selection import train_test_split
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
    mean, std = Xtr.mean(0), Xtr.std(0)
    std[std == 0] = 1
    Xtr, Xte = (Xtr - mean) / std, (Xte - mean) / std
    Xfit, Xval, yfit, yval = train_test_split(Xtr, ytr, test_size=0.15, stratify=ytr,
                                              random_state=0)
    t0 = time.perf_counter()
    net = MLPClassifier((256,), loss="cross_entropy", optimizer="adam", learning_rate=1e-3,
                        epochs=15, batch_size=64, seed=0).fit(Xfit, yfit)
    # the compiler's search under 1 point of validation accuracy, and the cortex-m3 profile's
    # flash less 64 KiB for the firmware as the weights' budget
    budget = 512 * 1024 - 64 * 1024
    try:
        cm, rep = compress_model(from_network(net), Xval, yval, 0.01, method="svd",
                                 profile=PROFILE, max_memory=budget)
    except BudgetInfeasible as exc:
        print(f"Daily and Sports: {exc}; compressing without the memory budget")
        cm, rep = compress_model(from_network(net), Xval, yval, 0.01, method="svd")
    print(f"Daily and Sports: trained and compressed in {time.perf_counter() - t0:.0f} s: "
          f"{[la.kind for la in cm.layers]}")
    f = os.path.join(work, "dsa-compressed.npz")
    save_model(cm, f)
    rt = SparseRuntime(f)
    py_scores = rt.run(Xte)
    py_classes = np.argmax(py_scores, axis=1)
    row = run_export("dsa-compressed-float32", cm, Xte, yte, py_classes, py_scores, work,
                     limit=args.limit)
    row8 = run_export("dsa-compressed-int8", cm, Xte, yte, py_classes, py_scores, work,
                      weights="int8", calibrate=Xfit, limit=args.limit)
    sec = predict_time(cm, PROFILE)
    for r in (row, row8):
        r.update(settings=" ".join(la.kind for la in cm.layers),
                 python_accuracy_uncompressed=float(net.score(Xte, yte)),
                 cost_model_seconds=sec, cost_model_cycles=sec * CLOCK_HZ)
    return [row, row8]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, help="test samples run under QEMU (default: all)")
    args = ap.parse_args(argv)
    missing = [k for k, v in tc.tools().items() if not v]
    if missing:
        raise SystemExit(f"export benchmark: not installed: {missing}")
    with tempfile.TemporaryDirectory() as work:
        rows = uji_rows(args, work) + dsa_rows(args, work)
    cols = ["model", "n_test", "python_accuracy", "export_accuracy", "n_differ", "flash_bytes",
            "predicted_flash_bytes", "ram_bytes", "predicted_ram_bytes", "insns_per_inference",
            "cost_model_cycles"]
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) and v < 1 else (
            f"{v:,.0f}" if isinstance(v, float) else v)
    print_table(cols, [[cell(r.get(c)) for c in cols] for r in rows])
    if args.json:
        write_json(args.json, {"rows": rows, "profile": PROFILE,
                               "counting": "qemu-system-arm -icount shift=0: 1 ns per guest "
                                           "instruction; AN385 timer 0 at 25 MHz = "
                                           f"{tc.INSNS_PER_TICK} instructions per tick"})
    return rows


if __name__ == "__main__":
    main()
