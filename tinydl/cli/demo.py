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

from ._common import open_fraction, parse_bytes

HELP = "run TinyDL against a raw-feature network on a bundled real dataset and print a table"

#: datasets shipped in tinydl/datasets (name -> file); UJIIndoorLoc is the default
DEMO_DATASETS = {"ujiindoorloc": "ujiindoorloc.npz", "digits": "digits.npz"}


def add_arguments(p):
    p.add_argument("--data", default="ujiindoorloc",
                   help="bundled dataset name (ujiindoorloc, the default: UJIIndoorLoc, "
                        "19,937 training and 1,111 test samples; or digits) or a .npz with "
                        "X_train, y_train, X_test, y_test (or X, y: 20%% held out)")
    p.add_argument("--profile", default="x86-64-host", metavar="TAG",
                   help="device profile the plan and the energy figures are for "
                        "(default: x86-64-host; `tinydl calibrate` measures this machine)")
    p.add_argument("--memory", type=parse_bytes, default="16MiB", metavar="SIZE",
                   help="memory budget of the plan (default: 16MiB)")
    p.add_argument("--rate", type=float, default=1000.0, metavar="HZ",
                   help="sample arrival rate the plan must keep up with (default: 1000)")
    p.add_argument("--l", type=int, default=None, help="dictionary size (default: the plan's)")
    p.add_argument("--k", type=int, default=None, help="non-zeros per code (default: the "
                   "plan's)")
    p.add_argument("--alpha", type=float, default=None,
                   help="projection-error threshold (default 0.5, as tinydl reproduce)")
    p.add_argument("--hidden", default=None, metavar="H1,H2",
                   help="TinyDL's hidden layers (default: the plan's)")
    p.add_argument("--n-batch", type=int, default=None,
                   help="retrain every N samples (default 256, as tinydl reproduce)")
    p.add_argument("--window", type=int, default=None, help="samples kept for retraining")
    p.add_argument("--epochs", type=int, default=10, help="epochs per update (default: 10)")
    p.add_argument("--max-train", type=int, default=None, metavar="N",
                   help="stream only the first N training samples (default: all)")
    p.add_argument("--val-fraction", type=open_fraction, default=0.15,
                   help="stratified validation hold-out of the training set, never streamed, "
                        "on which TinyDL's input scaling is chosen (default 0.15)")
    p.add_argument("--seed", type=int, default=0,
                   help="stream order (the training set shuffled with it), hold-out and "
                        "network initialisation")
    p.add_argument("--backend", default=None, help="HAL backend (default: automatic)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="BLAS threads for both learners (default 1: on a shared two-core "
                        "machine two threads are often much slower)")
    p.add_argument("--plot", default="tinydl-demo.png",
                   help="where to write the error-over-time plot (needs matplotlib; '' for none)")


def _resolve(name):
    import os
    if name in DEMO_DATASETS and not os.path.isfile(name):
        return os.path.join(os.path.dirname(os.path.dirname(__file__)), "datasets",
                            DEMO_DATASETS[name])
    return name


class _Clock:
    """Seconds spent inside ``with`` blocks (the learners' timing hooks)."""

    def __init__(self):
        self.seconds = 0.0

    def __enter__(self):
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self._t0
        return False


def _tiny(plan, standardize, seed, backend, Xte, yte):
    from ..learner import TinyDLClassifier
    t = TinyDLClassifier(**plan, seed=seed, backend=backend, standardize=standardize)
    t.transform_timer, t.train_timer = _Clock(), _Clock()
    t.curve = {"samples": [], "error": []}

    def on_update(lr):
        lr.curve["samples"].append(int(lr.n_samples_seen_))
        lr.curve["error"].append(1 - lr.score(Xte, yte))
    t.on_update = on_update
    return t


def run(args):
    from hal.threads import set_num_threads

    from ..baseline import RawStreamLearner, exec_time_us
    from ..data import load_real
    from ..errors import DivergenceError
    from ..nn import MLPClassifier
    from ..reproduce.protocol import APPLICATIONS, _holdout
    from ..standardize import fit_stats
    from . import CommandError, emit_json
    set_num_threads(args.threads)
    ds = load_real(_resolve(args.data))
    if ds.y_train is None:
        raise CommandError(f"{args.data}: the demo needs labels (X_train, y_train, X_test, "
                           "y_test, or X and y)")
    if ds.X_test is None:  # X, y only (the Daily and Sports subset): reproduce's split
        from ..data import split_dataset
        ds = split_dataset(ds, 0.2, 0)
        print(f"{args.data} has no test split: 20% of its samples held out (stratified, "
              "seed 0, as tinydl reproduce does)", file=sys.stderr, flush=True)
    Xall, yall, Xte, yte = ds.X_train, ds.y_train, ds.X_test, ds.y_test
    m = Xall.shape[1]
    classes = np.unique(np.concatenate([yall, yte]))
    # the stream: the training set shuffled (files are often grouped by class or place), a
    # stratified validation hold-out taken out of it and never streamed
    order = np.random.default_rng(args.seed).permutation(len(Xall))
    val = _holdout(yall[order], args.val_fraction, args.seed)
    fit_idx, val_idx = order[~val], order[val]
    if args.max_train:
        fit_idx = fit_idx[:args.max_train]
    Xtr, ytr, Xval, yval = Xall[fit_idx], yall[fit_idx], Xall[val_idx], yall[val_idx]
    from ..customize import HIDDEN_LADDER
    from ..customize import plan as make_plan
    from ..reproduce.protocol import _n_params
    from ._common import Progress
    budget_mem = int(args.memory)
    app = ds.application or ""
    raw_hidden = tuple(APPLICATIONS.get(app, APPLICATIONS[""])["raw_hidden"])
    # the plan weighs the networks at least 20x smaller than the raw one (the size limit of
    # `tinydl reproduce`), at the paper's l = 100 (capped at m)
    raw_params = _n_params([m, *raw_hidden, len(classes)])
    l_ref = min(100, m)
    small = [h for h in HIDDEN_LADDER
             if 20 * _n_params([l_ref, *h, len(classes)]) <= raw_params] or [HIDDEN_LADDER[0]]
    # the backend hal chooses here (numpy unless TINYDL_BACKEND or --backend says otherwise),
    # not the profile's first preference: the plan is priced for the backend that runs
    import hal
    backend = args.backend or hal.select_backend(None)[0]
    backend = backend if isinstance(backend, str) else backend.name
    pl = make_plan(m, len(classes), args.profile, memory_bytes=budget_mem, rate_hz=args.rate,
                   n_samples=len(Xtr), backend=backend, hidden_choices=small)
    backend = pl.backend  # one decision: both learners run on the backend the plan priced
    hidden = (tuple(int(h) for h in args.hidden.split(",")) if args.hidden
              else tuple(pl.hidden_layer_sizes))
    # l, k, the network and the window from the plan; alpha and the update interval are
    # those of `tinydl reproduce` (the customizer tunes alpha only with data and a target)
    plan = dict(l=args.l or pl.l, k=args.k or pl.k,
                alpha=APPLICATIONS.get(app, APPLICATIONS[""])["alpha"] if args.alpha is None
                else args.alpha,
                hidden_layer_sizes=hidden, window=args.window or pl.window,
                n_batch=args.n_batch or 256, epochs_per_update=args.epochs,
                dtype="float32")
    step = plan["n_batch"]
    energy = _predicted_energy(args.profile, m, len(classes), plan, raw_hidden, len(Xtr))

    # TinyDL, standardized and not: the input scaling is chosen on the validation hold-out
    # (the rule of `tinydl reproduce`); both see the same stream
    runs = {}
    for scaling in (True, False):
        t = _tiny(plan, scaling, args.seed, backend, Xte, yte)
        prog = Progress(len(Xtr), f"TinyDL ({'standardized' if scaling else 'unscaled'})")
        try:
            for s in range(0, len(Xtr), step):
                t.partial_fit(Xtr[s:s + step], ytr[s:s + step], classes=classes)
                prog.update(min(s + step, len(Xtr)))
            t.finish()
            runs[scaling] = (t.score(Xval, yval), t)
        except DivergenceError:
            runs[scaling] = None
        prog.close()
    ok = {s: r for s, r in runs.items() if r is not None}
    if not ok:
        raise CommandError("TinyDL diverged with and without standardization")
    scaling = max(ok, key=lambda s: (ok[s][0], s))
    val_tiny, tiny = ok[scaling]
    t_tiny = tiny.train_timer.seconds
    t_transform = tiny.transform_timer.seconds

    # the conventional network on the raw features: the paper's recipe (SGD with momentum,
    # L2 loss), dropout 0.2, standardized with the first 256 stream samples' statistics
    mu, sd = fit_stats(Xtr[:min(256, len(Xtr))], np.float32)
    raw_net = MLPClassifier(hidden_layer_sizes=raw_hidden, dropout=0.2, loss="l2",
                            optimizer="sgd", learning_rate=0.01, momentum=0.9, batch_size=32,
                            epochs=1, seed=args.seed, dtype="float32", backend=backend)
    raw = RawStreamLearner(raw_net, plan["window"], step, args.epochs, m, np.float32)
    raw.train_timer = _Clock()
    Zte = ((Xte - mu) / sd).astype(np.float32)
    curve = {"samples": [], "raw_error": [], "tinydl_samples": tiny.curve["samples"],
             "tinydl_error": tiny.curve["error"]}

    def on_raw(lr):
        curve["samples"].append(int(lr.seen))
        curve["raw_error"].append(1 - lr.net.score(Zte, yte))
    raw.on_update = on_raw
    prog = Progress(len(Xtr), "raw network")
    for s in range(0, len(Xtr), step):
        raw.partial_fit(((Xtr[s:s + step] - mu) / sd).astype(np.float32), ytr[s:s + step],
                        classes)
        prog.update(min(s + step, len(Xtr)))
    if raw.seen % step:
        raw.retrain(classes)
    prog.close()
    t_raw = raw.train_timer.seconds

    acc_tiny = tiny.score(Xte, yte)
    acc_raw = raw_net.score(Zte, yte)
    exec_tiny = exec_time_us(tiny.predict, Xte)   # end to end: scaling, transform, network
    exec_raw = exec_time_us(lambda x: raw_net.predict(((x - mu) / sd).astype(np.float32)),
                            Xte)
    rows = [
        ("test accuracy", f"{acc_tiny:.3f}", f"{acc_raw:.3f}", ""),
        ("network parameters", f"{tiny.n_params_}", f"{raw_net.n_params_}",
         f"{raw_net.n_params_ / tiny.n_params_:.1f}x smaller"),
        ("training time (s)", f"{t_tiny:.2f}", f"{t_raw:.2f}", f"{t_raw / t_tiny:.2f}x"),
        ("  + transform (s)", f"{t_tiny + t_transform:.2f}", "",
         f"{t_raw / (t_tiny + t_transform):.2f}x"),
        ("execution (us/sample)", f"{exec_tiny:.0f}", f"{exec_raw:.0f}",
         f"{exec_raw / exec_tiny:.2f}x"),
        ("training energy (J)*", f"{energy['tinydl_train_j']:.3g}",
         f"{energy['raw_train_j']:.3g}",
         f"{energy['raw_train_j'] / energy['tinydl_train_j']:.2f}x"),
        ("execution energy (uJ)*", f"{energy['tinydl_exec_uj']:.3g}",
         f"{energy['raw_exec_uj']:.3g}",
         f"{energy['raw_exec_uj'] / energy['tinydl_exec_uj']:.2f}x"),
    ]
    n = len(Xtr)
    params = tiny.get_params()
    result = dict(dataset=ds.name, backend=tiny.backend_, blas_threads=args.threads,
                  accuracy_tinydl=acc_tiny, accuracy_raw=acc_raw,
                  train_time_ratio=t_raw / t_tiny,
                  train_time_ratio_with_transform=t_raw / (t_tiny + t_transform),
                  size_reduction=raw_net.n_params_ / tiny.n_params_,
                  exec_time_ratio=exec_raw / exec_tiny,
                  n_train=int(n), n_validation=int(len(yval)), n_test=int(len(Xte)),
                  n_features=int(m), order=f"shuffled (seed {args.seed})",
                  plan=dict(plan, hidden_layer_sizes=list(hidden)),
                  tinydl=dict(accuracy=acc_tiny, val_accuracy=val_tiny,
                              scaling="standardize" if scaling else "none",
                              scaling_rule="standardize or none, the more accurate on the "
                                           "validation hold-out",
                              val_accuracy_by_scaling={
                                  ("standardize" if s else "none"):
                                      (None if r is None else r[0]) for s, r in runs.items()},
                              optimizer=params.get("optimizer", "sgd"), loss=params["loss"],
                              learning_rate=params["learning_rate"],
                              n_params=tiny.n_params_, train_s=t_tiny, transform_s=t_transform,
                              exec_us=exec_tiny, n_atoms=int(tiny.transform_.n_atoms_)),
                  raw=dict(accuracy=acc_raw, n_params=raw_net.n_params_, train_s=t_raw,
                           exec_us=exec_raw, hidden_layer_sizes=list(raw_hidden),
                           recipe="sgd-l2 (the paper's), dropout 0.2, standardized"),
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
    print(f"tinydl demo on {ds.name}: {n} training samples streamed (shuffled, seed "
          f"{args.seed}), {len(yval)} held out for validation, {len(Xte)} test samples, "
          f"m={m} features, {len(classes)} classes")
    print(f"budget on {args.profile}: memory {budget_mem:,} bytes, {args.rate:g} samples/s "
          f"-> plan: l={plan['l']} atoms, k={plan['k']} non-zeros, alpha={plan['alpha']:g}, "
          f"network {plan['l']}-{'-'.join(map(str, hidden))}-{len(classes)}, window="
          f"{plan['window']}, retrain every {step} samples x {args.epochs} epochs")
    print(f"  predicted: footprint {pl.footprint_bytes:,} bytes (paper's m*l+l*n+|param|: "
          f"{pl.paper_bytes:,}), transform {pl.transform_seconds * 1e6:.1f} us/sample; "
          f"dictionary filled {tiny.transform_.n_atoms_}/{plan['l']}")
    by = result["tinydl"]["val_accuracy_by_scaling"]
    print(f"  TinyDL's input scaling chosen on validation: {result['tinydl']['scaling']} ("
          + ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} diverged"
                      for k, v in by.items()) + ")")
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
    ax.plot(curve["tinydl_samples"], np.array(curve["tinydl_error"]) * 100,
            label="TinyDL (codes)")
    ax.plot(curve["samples"], np.array(curve["raw_error"]) * 100, label="DNN (raw features)")
    ax.set_xlabel("training samples streamed")
    ax.set_ylabel("test error (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    from ..io import save_png
    return save_png(fig, path, dpi=120)
