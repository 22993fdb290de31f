"""``tinydl calibrate -o platforms/<tag>.toml``: measure this machine and write a profile.

The measuring code lives in :mod:`hal.calibrate` (the ``calibration/`` scripts call it too).
"""
from __future__ import annotations

import os

HELP = "measure this machine (bandwidth, throughput per backend, transform cost, power) " \
       "and write a device profile"


def add_arguments(p):
    """Add this command's options to the argparse ``parser``."""
    p.add_argument("-o", "--output", metavar="PATH", required=True,
                   help="where to write the profile, e.g. platforms/my-host.toml")
    p.add_argument("--tag", help="the profile's tag (default: the output file's name)")
    p.add_argument("--name", help="a human-readable name for the machine")
    p.add_argument("--quick", action="store_true",
                   help="a few seconds of measuring instead of a minute or two (rougher)")
    p.add_argument("--backends", metavar="LIST",
                   help="comma-separated backends to time (default: every one that can run)")
    p.add_argument("--dtypes", default="float32,float64", metavar="LIST",
                   help="comma-separated dtypes to time (default: float32,float64)")
    p.add_argument("--power-csv", metavar="PATH",
                   help="an external power meter's log (rows: unix timestamp, watts) that "
                        "covers this run")
    p.add_argument("--power-root", default="/", metavar="DIR",
                   help="root of the sysfs tree read for RAPL/INA3221/battery (default /)")
    p.add_argument("--base", default="x86-64-host", metavar="PROFILE",
                   help="profile whose model figures are kept where nothing can be measured "
                        "(default x86-64-host)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _split(text):
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def mlp_train_epoch(X, y, hidden):
    """One epoch of :class:`tinydl.nn.MLPClassifier` (hidden layers ``hidden``, batch 32,
    float32, l2 loss) on ``X`` (n, n_in) and labels ``y`` (n,): the training step that
    :func:`hal.calibrate.measure_training` times (hal imports nothing from tinydl)."""
    from tinydl.nn import MLPClassifier
    MLPClassifier(hidden_layer_sizes=tuple(hidden), batch_size=32, epochs=1,
                  learning_rate=0.01, momentum=0.9, dropout=0.0, loss="l2", seed=0,
                  dtype="float32").fit(X, y)


def run(args):
    """Run the command with the parsed ``args``; returns the exit status (0)."""
    from hal.calibrate import calibrate

    from . import emit_json
    dtypes = _split(args.dtypes) or ["float32"]
    for dt in dtypes:
        if dt not in ("float32", "float64"):
            raise ValueError(f"--dtypes: {dt!r} is not float32 or float64")
    # what would fail after minutes of measuring fails first
    out_dir = os.path.dirname(os.path.abspath(args.output))
    if os.path.isdir(out_dir) and not os.access(out_dir, os.W_OK | os.X_OK):
        raise OSError(f"cannot write {args.output}: {out_dir} is not writable")
    if args.power_csv:  # the meter log the user named: used, or the command stops
        from hal.power import MeterCSV
        why = MeterCSV(args.power_csv).probe() if os.path.isfile(args.power_csv) else \
            "no such file"
        if why is not None:
            raise ValueError(f"--power-csv {args.power_csv}: {why}")
    tag = args.tag or os.path.splitext(os.path.basename(args.output))[0]
    profile, report = calibrate(tag, name=args.name, quick=args.quick,
                                backends=_split(args.backends), dtypes=dtypes,
                                power_csv=args.power_csv, power_root=args.power_root,
                                base=args.base, progress=not args.no_progress,
                                train_epoch=mlp_train_epoch)
    profile.save(args.output)
    skipped = {k: " ".join(str(v).split())[:200] for k, v in report["skipped"].items()}
    summary = {
        "output": args.output, "tag": profile.tag,
        "bandwidth_gbs": profile.memory.bandwidth_gbs,
        "backends": {b.name: {"call_overhead_us": b.call_overhead_s * 1e6,
                              "matmul_gflops": {f"{d}/{s}": v for d, o, s, v in b.gflops
                                                if o == "matmul"}}
                     for b in profile.backends},
        "skipped": skipped,
        "transform": {"c1_flops": profile.transform.c1_flops,
                      "c2_flops": profile.transform.c2_flops,
                      "calls_per_iteration": profile.transform.calls_per_iteration},
        "training_calls_per_layer": profile.training_model.calls_per_layer,
        "training_source": profile.training_model.source,
        "power_source": profile.power.measured_with,
        "power_decisions": [list(d) for d in report["power_decisions"]],
    }
    if args.json is not None:
        emit_json(summary, args.json)
        return 0
    print(f"wrote {args.output} (tag {profile.tag!r})")
    print(f"  memory bandwidth   {profile.memory.bandwidth_gbs:8.1f} GB/s")
    for b in profile.backends:
        figs = ", ".join(f"{d[5:]}/{s} {v:.0f}" for d, o, s, v in b.gflops if o == "matmul")
        print(f"  {b.name:<18} overhead {b.call_overhead_s * 1e6:5.1f} us; matmul GFLOP/s "
              f"{figs}")
    for name, why in skipped.items():
        print(f"  {name:<18} skipped: {why}")
    t = profile.transform
    print(f"  transform model    c1={t.c1_flops:.2f} c2={t.c2_flops:.2f} "
          f"calls/iteration={t.calls_per_iteration:.1f}")
    print(f"  trainer            calls/layer={profile.training_model.calls_per_layer:.1f} "
          f"({profile.training_model.source})")
    print(f"  power              source: {profile.power.measured_with}")
    return 0
