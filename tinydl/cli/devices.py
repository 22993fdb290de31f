"""``tinydl devices``: which backends can run here, which one would be chosen, and why."""
from __future__ import annotations

import os

HELP = "list the compute backends, the one that would be chosen, and why others were skipped"


def add_arguments(parser) -> None:
    """Add this command's options to the argparse ``parser``."""
    parser.add_argument("--profile", metavar="TAG",
                        help="a device profile whose backend preference list is applied")
    parser.add_argument("--backend", metavar="NAME",
                        help="the backend asked for explicitly (as an API caller would)")


def _profile(tag):
    """``(profile, note)``: the device profile ``tag`` (None without one); the profile module
    is optional, so its absence is reported in ``note``, not fatal."""
    if not tag:
        return None, None
    try:
        from hal.profile import load_profile
    except ImportError as exc:
        return None, f"profiles unavailable ({exc}); preference list ignored"
    return load_profile(tag), None


def _details(name):
    """One line about the hardware behind a runnable backend."""
    try:
        if name == "opencl":
            from hal.backends.opencl import select_device
            dev, label = select_device(None)
            fp64 = "cl_khr_fp64" in dev.extensions
            return f"{label} (float64: {'yes' if fp64 else 'no, runs in NumPy'})"
        if name == "blas":
            from hal.backends.blas import _load
            lib = _load()
            return lib[4] if lib else ""
        if name == "multiprocessing":
            from hal.backends.multiprocessing import default_start_method
            return f"{os.cpu_count()} workers, start method {default_start_method()}"
        if name == "null":
            return "counts FLOPs, bytes and calls; computes nothing (for pricing plans)"
        if name == "numpy":
            from hal import threads
            n = threads.get_num_threads()
            return f"BLAS threads: {n if n is not None else 'unknown'}"
    except Exception as exc:  # details are informative only
        return f"({type(exc).__name__}: {exc})"
    return ""


def run(args) -> int:
    """Run the command with the parsed ``args``; returns the exit status (0)."""
    import hal

    from . import emit_json

    prof, note = _profile(args.profile)
    prefs = tuple(prof.backend_preference) if prof is not None else ()
    avail = hal.available_backends()
    # the one rule (hal.select_backend), with the profile's preferences and figures
    chosen, decisions = hal.select_backend(args.backend, profile=prof)
    result = {
        "chosen": chosen,
        "decisions": [{"backend": b, "why": w} for b, w in decisions],
        "preferences": list(prefs),
        "env": {k: os.environ[k] for k in ("TINYDL_BACKEND", "TINYDL_OPENCL_DEVICE")
                if k in os.environ},
        "backends": {name: {"available": ok, "reason": why,
                            "details": _details(name) if ok else ""}
                     for name, (ok, why) in avail.items()},
    }
    if note:
        result["note"] = note
    if args.json is not None:
        emit_json(result, args.json)
        return 0
    width = max(len(n) for n in avail)
    print(f"{'backend':<{width}}  status   details / reason")
    for name, info in result["backends"].items():
        mark = "chosen" if name == chosen else ("ok" if info["available"] else "skipped")
        text = info["details"] if info["available"] else info["reason"]
        print(f"{name:<{width}}  {mark:<7}  {text}")
    print(f"\nwould use: {chosen}")
    for d in result["decisions"]:
        print(f"  {d['backend']}: {d['why']}")
    if note:
        print(f"note: {note}")
    return 0
