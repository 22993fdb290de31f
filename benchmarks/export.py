"""C export on an emulated Cortex-M3: agreement with Python, accuracy, flash, RAM, instructions.

    python benchmarks/export.py [--json PATH] [--data DIR] [--limit N] [--cache DIR]
                                [--models uji,dsa] [--dsa-models dsa-mlp,dsa-cnn]

One row per exported model, each built with ``arm-none-eabi-gcc -O2 -mcpu=cortex-m3 -mthumb``
(picolibc, semihosting) and run under ``qemu-system-arm -M mps2-an385 -icount shift=0`` on the
whole test split:

* ``uji-tinydl-float32`` / ``uji-tinydl-int8``: a TinyDL model on UJIIndoorLoc (the shared
  file's training split through :func:`tinydl.data.uji_rssi_to_features`, streamed in a
  seeded shuffled order, settings of the default plan ``tinydl.customize.plan(520, C)``); int8
  calibrated on the first 1,024 rows of that stream; tested on UCI's 1,111 validation rows;
* ``dsa-mlp-float32`` / ``dsa-mlp-int8`` and ``dsa-cnn-float32`` / ``dsa-cnn-int8``: issue
  19's Daily and Sports networks (:mod:`benchmarks._compress_nets`: the paper's raw MLP
  5625-2000-500-19 and a 1-D convolution network over 45 channels x 125 steps, trained the
  way ``tinydl reproduce`` trains its raw network and cached under ``--cache``, default
  ``~/.cache/tinydl/compress``; **when the cache is absent they are trained here first,
  which takes tens of minutes**), compressed by ``benchmarks/compress.py``'s rule
  (``compress_model`` with method ``auto``, criterion ``lost`` on the validation hold-out,
  data-aware forms fitted on the training stream) at its 5% budget (``--budget``; at its 1%
  the MLP keeps 9.4 MB, 4.6 MB with int8 weights: more than the mps2-an385 board's 4 MiB of
  code memory). float32 is method ``auto``; int8 is ``auto+int8`` (the int8 weights and
  per-channel scales the compiler stores and checked, exported as they are). Compared with
  :class:`tinydl.compress.SparseRuntime` on the protocol's whole test split (stratified
  20%, seed 0). The board is not the ``cortex-m3`` profile: a network over the profile's
  512 KiB of flash still runs under QEMU (``fits_profile`` says whether it fits the
  profile, ``fits_board`` the board).

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
    # "weights": the type the export stores them in (a compressed model's int8 weights are
    # exported as they are even when ``weights`` is float32)
    row = {"model": name, "weights": info["weights"], "n_test": int(n),
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


#: the mps2-an385 board's code memory (4 MiB SSRAM1, the linker's flash) less 64 KiB for the
#: firmware: a compressed network must fit it to run under QEMU
BOARD_FLASH = 4 * 1024 * 1024 - 64 * 1024


def compressed_variant(net, label, budget):
    """``net`` compressed by issue 19's rule (``benchmarks/compress.py``: method ``label`` of its
    ``RUNS``, criterion ``lost`` on the validation hold-out, data-aware forms fitted on the
    training stream) at ``budget``; returns (model, report, seconds)."""
    from benchmarks.compress import RUNS
    from tinydl.compress import compress_model
    kw = next(r[1] for r in RUNS if r[0] == label)
    t0 = time.perf_counter()
    cm, rep = compress_model(net.model, net.X_val, net.y_val, budget, X_fit=net.X_fit,
                             criterion="lost", **kw)
    sec = time.perf_counter() - t0
    print(f"{net.name} {label} at {budget:.2f}: {cm.nbytes:,} bytes (from "
          f"{net.model.nbytes:,}) in {sec:.0f} s", flush=True)
    return cm, rep, sec


def dsa_rows(args, work):
    """Issue 19's Daily and Sports networks (``benchmarks/_compress_nets.py``: trained by the
    reproduce recipe and cached; trained here, minutes, when the cache is absent) compressed by
    :func:`compressed_variant` (``auto`` exported in float32, ``auto+int8`` with the int8
    weights the compiler stores) and compared with :class:`tinydl.compress.SparseRuntime`."""
    from benchmarks._compress_nets import networks
    from hal.profile import load_profile
    from tinydl.compress import SparseRuntime, save_model
    from tinydl.compress.compiler import predict_time
    dsa = os.path.join(args.data, "dsa_subset20_f16.npz")
    uji = os.path.join(args.data, "ujiindoorloc.npz")
    if not os.path.isfile(dsa):
        print(f"skipping Daily and Sports: {dsa} is absent")
        return []
    prof = load_profile(PROFILE)
    flash_limit, ram_limit = int(prof.memory.flash_bytes), int(prof.memory.capacity_bytes)
    rows = []
    for net in networks(dsa, uji, args.cache, names=args.dsa_models.split(",")):
        acc0 = net.model.score(net.X_test, net.y_test)
        for label, weights in (("auto", "float32"), ("auto+int8", "int8")):
            budget = args.budget
            cm, rep, comp_s = compressed_variant(net, label, budget)
            if cm.nbytes > BOARD_FLASH:
                print(f"{net.name} {label}: {cm.nbytes:,} bytes do not fit the board's "
                      f"{BOARD_FLASH:,}; skipped")
                continue
            f = os.path.join(work, f"{net.name}-{label}.npz")
            save_model(cm, f)
            py_scores = SparseRuntime(f).run(net.X_test)
            py_classes = np.argmax(py_scores, axis=1)
            # exported as the compiler stored it (no further quantization by the export)
            row = run_export(f"{net.name}-{weights}", cm, net.X_test, net.y_test, py_classes,
                             py_scores, work, limit=args.limit)
            sec = predict_time(cm, PROFILE)
            row.update(settings=f"{label} at {budget:.0%}: " + "; ".join(
                           f"L{r.index}: {r.choice}" for r in
                           sorted(rep.layers, key=lambda r: r.index)),
                       method=label, budget=budget, compile_s=comp_s,
                       model_bytes=int(cm.nbytes), original_bytes=int(net.model.nbytes),
                       python_accuracy_uncompressed=float(acc0),
                       fits_profile=bool(row["flash_bytes"] <= flash_limit
                                         and row["ram_bytes"] <= ram_limit),
                       fits_board=bool(row["flash_bytes"] <= BOARD_FLASH),
                       cost_model_seconds=sec, cost_model_cycles=sec * CLOCK_HZ)
            rows.append(row)
            print(f"{row['model']}: {row['n_differ']} of {row['n_test']} classes differ, "
                  f"flash {row['flash_bytes']:,} (predicted {row['predicted_flash_bytes']:,}), "
                  f"{row['insns_per_inference'] / 1e6:.2f} M instructions, QEMU "
                  f"{row['qemu_seconds']:.0f} s", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, help="test samples run under QEMU (default: all)")
    ap.add_argument("--cache", default=None,
                    help="issue 19's trained networks (default ~/.cache/tinydl/compress)")
    ap.add_argument("--dsa-models", default="dsa-mlp,dsa-cnn",
                    help="which of issue 19's Daily and Sports networks to export")
    ap.add_argument("--budget", type=float, default=0.05,
                    help="issue 19's accuracy budget for the Daily and Sports networks (its "
                         "5%%: at its 1%% the MLP keeps 9.4 MB, 4.6 MB in int8)")
    ap.add_argument("--models", default="uji,dsa", help="uji, dsa or both")
    args = ap.parse_args(argv)
    if args.cache is None:
        from benchmarks._compress_nets import DEFAULT_CACHE
        args.cache = DEFAULT_CACHE
    missing = [k for k, v in tc.tools().items() if not v]
    if missing:
        raise SystemExit(f"export benchmark: not installed: {missing}")
    with tempfile.TemporaryDirectory() as work:
        which = args.models.split(",")
        rows = (uji_rows(args, work) if "uji" in which else []) + \
            (dsa_rows(args, work) if "dsa" in which else [])
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
