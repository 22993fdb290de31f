"""``tinydl demo``: TinyDL against a network on the raw features, on a real dataset.

Both learners see the same training stream in the same order and are updated at the same
sample counts (every ``n_batch`` samples, on the window of the last ``window`` samples): TinyDL
on the sparse codes of Algorithm 2, the conventional network on the raw features.  The table
gives test accuracy, network size, training time, per-sample execution time and the
energy predicted from the device profile; with matplotlib installed, a plot of test error over
the stream (the paper's Fig. 2) is written too.
"""
from __future__ import annotations

import sys
import time

import numpy as np

HELP = "run TinyDL against a raw-feature network on a bundled real dataset and print a table"


def add_arguments(p):
    p.add_argument("--data", default="digits",
                   help="bundled dataset name or a .npz with X_train, y_train, X_test, y_test "
                        "(default: the bundled UCI handwritten digits)")
    p.add_argument("--profile", default="x86-64-host", metavar="TAG",
                   help="device profile the plan and the energy figures are for "
                        "(default: x86-64-host; `tinydl calibrate` measures this machine)")
    p.add_argument("--memory", default="2MiB", metavar="SIZE",
                   help="memory budget of the plan (default: 2MiB)")
    p.add_argument("--rate", type=float, default=1000.0, metavar="HZ",
                   help="sample arrival rate the plan must keep up with (default: 1000)")
    p.add_argument("--l", type=int, default=None, help="dictionary size (default: the plan's)")
    p.add_argument("--k", type=int, default=None, help="non-zeros per code (default: the "
                   "plan's)")
    p.add_argument("--alpha", type=float, default=None, help="projection-error threshold")
    p.add_argument("--n-batch", type=int, default=None, help="retrain every N samples")
    p.add_argument("--window", type=int, default=None, help="samples kept for retraining")
    p.add_argument("--epochs", type=int, default=20, help="epochs per update (default: 20)")
    p.add_argument("--passes", type=int, default=1, help="passes over the training stream")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default=None, help="HAL backend (default: automatic)")
    p.add_argument("--plot", default="tinydl-demo.png",
                   help="where to write the error-over-time plot (needs matplotlib; '' for none)")


def run(args):
    from ..baseline import RawStreamLearner, exec_time_us
    from ..data import load_dataset
    from ..learner import TinyDLClassifier
    from ..nn import MLPClassifier
    from . import CommandError, emit_json

    ds = load_dataset(args.data)
    if ds.X_test is None or ds.y_train is None:
        raise CommandError(f"{args.data}: the demo needs X_train, y_train, X_test and y_test")
    Xtr, ytr, Xte, yte = ds.X_train, ds.y_train, ds.X_test, ds.y_test
    m = Xtr.shape[1]
    classes = np.unique(ytr)
    from ..customize import plan as make_plan
    from ._common import parse_bytes
    budget_mem = parse_bytes(args.memory)
    pl = make_plan(m, len(classes), args.profile, memory_bytes=budget_mem, rate_hz=args.rate,
                   n_samples=len(Xtr) * args.passes, backend=args.backend)
    backend = pl.backend  # one decision: both learners run on the backend the plan priced
    l = args.l or pl.l
    k = args.k or pl.k
    alpha = pl.alpha if args.alpha is None else args.alpha
    hidden = tuple(pl.hidden_layer_sizes)
    raw_hidden = (128, 64)
    plan = dict(l=l, k=k, alpha=alpha, hidden_layer_sizes=hidden,
                window=args.window or pl.window, n_batch=args.n_batch or pl.n_batch,
                epochs_per_update=args.epochs, dtype="float32")
    args.window, args.n_batch = plan["window"], plan["n_batch"]
    tiny = TinyDLClassifier(**plan, seed=args.seed, backend=backend, standardize=True)
    energy = _predicted_energy(args.profile, m, len(classes), plan, raw_hidden,
                               len(Xtr) * args.passes)
    raw_net = MLPClassifier(hidden_layer_sizes=raw_hidden, loss="l2", learning_rate=0.01,
                            momentum=0.9, batch_size=32, epochs=1, seed=args.seed,
                            dtype="float32", backend=backend)
    # the raw network standardizes with the same first-batch statistics TinyDL uses
    mu, sd = Xtr[:256].mean(0), Xtr[:256].std(0)
    sd[sd == 0] = 1
    raw = RawStreamLearner(raw_net, args.window, args.n_batch, args.epochs, m, np.float32)

    curve = {"samples": [], "tinydl_error": [], "raw_error": []}
    t_tiny = t_raw = 0.0
    n = len(Xtr)
    step = args.n_batch
    total = n * args.passes
    done = 0
    for p in range(args.passes):
        for s in range(0, n, step):
            xb, yb = Xtr[s:s + step], ytr[s:s + step]
            t0 = time.perf_counter()
            tiny.partial_fit(xb, yb, classes=classes)
            t1 = time.perf_counter()
            raw.partial_fit(((xb - mu) / sd).astype(np.float32), yb, classes)
            t2 = time.perf_counter()
            t_tiny += t1 - t0
            t_raw += t2 - t1
            done += len(xb)
            if tiny.n_updates_ and raw_net_ready(raw_net):
                curve["samples"].append(done)
                curve["tinydl_error"].append(1 - tiny.score(Xte, yte))
                curve["raw_error"].append(1 - raw_net.score(((Xte - mu) / sd), yte))
            print(f"\rstreaming: {done}/{total} samples", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    acc_tiny = tiny.score(Xte, yte)
    acc_raw = raw_net.score(((Xte - mu) / sd).astype(np.float32), yte)
    exec_tiny = exec_time_us(tiny.predict, Xte)
    exec_raw = exec_time_us(lambda x: raw_net.predict(((x - mu) / sd).astype(np.float32)), Xte)
    rows = [
        ("test accuracy", f"{acc_tiny:.3f}", f"{acc_raw:.3f}", ""),
        ("network parameters", f"{tiny.n_params_}", f"{raw_net.n_params_}",
         f"{raw_net.n_params_ / tiny.n_params_:.1f}x smaller"),
        ("training time (s)", f"{t_tiny:.2f}", f"{t_raw:.2f}", f"{t_raw / t_tiny:.2f}x"),
        ("execution (us/sample)", f"{exec_tiny:.0f}", f"{exec_raw:.0f}",
         f"{exec_raw / exec_tiny:.2f}x"),
        ("training energy (J)*", f"{energy['tinydl_train_j']:.3g}",
         f"{energy['raw_train_j']:.3g}",
         f"{energy['raw_train_j'] / energy['tinydl_train_j']:.2f}x"),
        ("execution energy (uJ)*", f"{energy['tinydl_exec_uj']:.3g}",
         f"{energy['raw_exec_uj']:.3g}",
         f"{energy['raw_exec_uj'] / energy['tinydl_exec_uj']:.2f}x"),
    ]
    result = dict(dataset=ds.name, backend=tiny.backend_, n_train=int(n),
                  n_test=int(len(Xte)), n_features=int(m),
                  plan=dict(plan, hidden_layer_sizes=list(hidden)),
                  tinydl=dict(accuracy=acc_tiny, n_params=tiny.n_params_, train_s=t_tiny,
                              exec_us=exec_tiny, n_atoms=int(tiny.transform_.n_atoms_)),
                  raw=dict(accuracy=acc_raw, n_params=raw_net.n_params_, train_s=t_raw,
                           exec_us=exec_raw, hidden_layer_sizes=list(raw_hidden)),
                  curve=curve, energy=energy, budget=dict(profile=args.profile,
                                                          memory_bytes=budget_mem,
                                                          rate_hz=args.rate),
                  customizer=pl.to_dict())
    if args.plot:
        result["plot"] = _plot(curve, args.plot)
    if args.json:
        emit_json(result, args.json)
        if args.json == "-":
            return 0
    print(f"tinydl demo on {ds.name}: {n} training samples streamed ({args.passes} pass), "
          f"{len(Xte)} test samples, m={m} features, {len(classes)} classes")
    print(f"budget on {args.profile}: memory {budget_mem:,} bytes, {args.rate:g} samples/s "
          f"-> plan: l={l} atoms, k={k} non-zeros, alpha={alpha:g}, network {l}-"
          f"{'-'.join(map(str, hidden))}-{len(classes)}, window={args.window}, "
          f"retrain every {args.n_batch} samples x {args.epochs} epochs")
    print(f"  predicted: footprint {pl.footprint_bytes:,} bytes (paper's m*l+l*n+|param|: "
          f"{pl.paper_bytes:,}), transform {pl.transform_seconds * 1e6:.1f} us/sample; "
          f"dictionary filled {tiny.transform_.n_atoms_}/{l}")
    w = [24, 12, 12, 16]
    print(f"{'':<{w[0]}}{'TinyDL':>{w[1]}}{'raw DNN':>{w[2]}}{'ratio':>{w[3]}}")
    for r in rows:
        print(f"{r[0]:<{w[0]}}{r[1]:>{w[1]}}{r[2]:>{w[2]}}{r[3]:>{w[3]}}")
    print(f"* predicted for {args.profile} by its power model ({energy['source']}); times "
          "above are measured here")
    if result.get("plot"):
        print(f"plot of test error over the stream: {result['plot']}")
    return 0


def _predicted_energy(profile, m, n_classes, plan, raw_hidden, n_samples):
    """Training and per-sample execution energy of both learners on ``profile``: the same
    number of updates (one per n_batch samples) of ``epochs_per_update`` passes over the
    window, plus TinyDL's transform of every sample."""
    from hal.cost import predict_inference, predict_training_epoch, predict_transform
    from hal.profile import load_profile
    prof = load_profile(profile)
    updates = max(1, n_samples // plan["n_batch"])
    ep = plan["epochs_per_update"]
    rows = min(plan["window"], n_samples)
    tiny_sizes = [plan["l"], *plan["hidden_layer_sizes"], n_classes]
    raw_sizes = [m, *raw_hidden, n_classes]
    t_upd = predict_training_epoch(prof, tiny_sizes, rows, 32, sparse_input_k=plan["k"])
    r_upd = predict_training_epoch(prof, raw_sizes, rows, 32)
    tr = predict_transform(prof, m, plan["l"], plan["k"], n_samples)
    t_exec = predict_inference(prof, tiny_sizes, 1, transform=(m, plan["l"], plan["k"]))
    r_exec = predict_inference(prof, raw_sizes, 1)
    src = prof.power.measured_with
    return dict(tinydl_train_j=tr.joules + updates * ep * t_upd.joules,
                raw_train_j=updates * ep * r_upd.joules,
                tinydl_exec_uj=t_exec.joules * 1e6, raw_exec_uj=r_exec.joules * 1e6,
                source="modeled, no power meter" if src == "model" else f"measured with {src}")


def raw_net_ready(net):
    return hasattr(net, "classes_")


def _plot(curve, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(curve["samples"], np.array(curve["tinydl_error"]) * 100, label="TinyDL (codes)")
    ax.plot(curve["samples"], np.array(curve["raw_error"]) * 100, label="DNN (raw features)")
    ax.set_xlabel("training samples streamed")
    ax.set_ylabel("test error (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    from ..io import save_png
    return save_png(fig, path, dpi=120)
