"""``tinydl reproduce``: the paper's Table I and noise experiment on real data.

The work is :mod:`tinydl.reproduce` (also called by ``benchmarks/reproduce.py``); this module
turns flags into :class:`tinydl.reproduce.Settings`, prints the tables, writes the plot and
the JSON.  The protocol is in ``docs/reproduce.md``.
"""
from __future__ import annotations

import os

HELP = "reproduce the paper's Table I and noise experiment on real data sets"


def add_arguments(p):
    from ..reproduce import Settings
    d = Settings()
    p.add_argument("--data", action="append", required=True, metavar="PATH",
                   help="a data set (repeatable): 'digits' (bundled), a Daily and Sports .npz "
                        "(X of shape (n, 125, 45), y) or folder (aNN/pM/sKK.txt), UJIIndoorLoc "
                        "trainingData.csv (validationData.csv beside it is the test set) or "
                        ".npz, ISOLET isolet1+2+3+4.data, or any .npz with X_train, y_train, "
                        "X_test, y_test")
    p.add_argument("--profile", default=d.profile, metavar="TAG",
                   help=f"device profile the costs are predicted for (default {d.profile})")
    p.add_argument("--host-profile", default=d.host_profile, metavar="TAG",
                   help="profile whose power model prices this machine's energy when no "
                        f"counter is readable (default {d.host_profile})")
    p.add_argument("--json", metavar="OUT", default=None,
                   help="write one object per data set, keyed by file name ('-': stdout)")
    p.add_argument("--plot", default="tinydl-reproduce-noise.png", metavar="PNG",
                   help="the noise experiment's plot ('' for none; with several noise data "
                        "sets the name gets each one's name)")
    p.add_argument("--quick", action="store_true",
                   help="tiny settings for tests: small networks, at most 320 training and 150 "
                        "test samples, 3 epochs (the numbers are not the paper's)")
    p.add_argument("--order", choices=("shuffled", "file"), default=d.order,
                   help="training stream order (default shuffled with --stream-seed)")
    p.add_argument("--stream-seed", type=int, default=d.stream_seed)
    p.add_argument("--split-seed", type=int, default=d.split_seed,
                   help="seed of the test split (data sets without one) and the validation "
                        "hold-out")
    p.add_argument("--seed", type=int, default=d.seed, help="network initialisation and noise")
    p.add_argument("--test-fraction", type=float, default=d.test_fraction)
    p.add_argument("--min-reduction", type=float, default=d.min_reduction, metavar="X",
                   help="TinyDL's size candidates are at least X times smaller than the raw "
                        "network; the most accurate on validation wins (default "
                        f"{d.min_reduction:g})")
    p.add_argument("--recipes", default=",".join(d.recipes), metavar="LIST",
                   help="training recipes each learner's is chosen from on validation "
                        f"(default {','.join(d.recipes)}; sgd-l2 is the paper's)")
    p.add_argument("--n-batch", type=int, default=None, help=f"retrain every N samples "
                   f"(default {d.n_batch})")
    p.add_argument("--window", type=int, default=None,
                   help=f"samples kept for retraining (default {d.window})")
    p.add_argument("--epochs", type=int, default=None, help=f"epochs per update (default "
                   f"{d.epochs})")
    p.add_argument("--noise", choices=("auto", "all", "off"), default=d.noise,
                   help="noise experiment on smart-sensing data sets (auto), every data set "
                        "(all), or none")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="BLAS threads for both learners (default 1: on a shared two-core "
                        "machine two threads are often much slower; recorded in the JSON)")
    p.add_argument("--backend", default=None, metavar="NAME",
                   help="the hal backend both learners run on (default: hal.select_backend's "
                        "choice; 'native' has the fast one-sample OMP); the profile's "
                        "predictions use the profile's own backend")
    p.add_argument("--no-departures", action="store_true",
                   help="skip the runs that measure each departure against the paper's rule")


def settings_from_args(args):
    """:class:`~tinydl.reproduce.Settings` from parsed flags."""
    from ..reproduce import Settings
    d = Settings()
    return Settings(
        test_fraction=args.test_fraction, split_seed=args.split_seed, order=args.order,
        stream_seed=args.stream_seed, min_reduction=args.min_reduction,
        recipes=tuple(r.strip() for r in args.recipes.split(",") if r.strip()),
        n_batch=args.n_batch or (min(d.n_batch, 64) if args.quick else d.n_batch),
        window=args.window or (min(d.window, 256) if args.quick else d.window),
        epochs=args.epochs or (min(d.epochs, 3) if args.quick else d.epochs),
        seed=args.seed, profile=args.profile, host_profile=args.host_profile, noise=args.noise,
        departures=not args.no_departures, quick=args.quick, backend=args.backend)


def _plot_path(base, key, several):
    if not several:
        return base
    stem, ext = os.path.splitext(base)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
    return f"{stem}-{safe}{ext or '.png'}"


def run(args):
    from hal.threads import set_num_threads

    from ..reproduce import format_report, plot_noise, reproduce
    from . import emit_json
    set_num_threads(args.threads)
    if args.backend:
        import hal
        hal.select_backend(args.backend)  # an unknown or unrunnable one stops here, before work
    from hal.profile import load_profile
    for tag in (args.profile, args.host_profile):  # likewise an unknown profile
        load_profile(tag)
    results = reproduce(args.data, settings_from_args(args))
    for r in results.values():
        r["blas_threads"] = args.threads
    noisy = [k for k, r in results.items() if "noise" in r]
    for key in noisy:
        if args.plot:
            results[key]["noise"]["plot"] = plot_noise(
                results[key], _plot_path(args.plot, key, len(noisy) > 1))
    if args.json == "-":
        emit_json(results, "-")
        return 0
    print(format_report(results), end="")
    if not noisy and args.noise != "off":
        print("noise experiment: no smart-sensing data set given (use --noise all to run it on "
              "the others)")
    if args.json:
        emit_json(results, args.json)
        print(f"JSON: {args.json}")
    return 0
