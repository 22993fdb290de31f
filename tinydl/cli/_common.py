"""Arguments shared by ``tinydl plan`` and ``tinydl fit``: the budget, with units."""
from __future__ import annotations

import argparse
import re
import sys
import time

from . import CommandError

_SIZE = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 10 ** 6, "mb": 10 ** 6, "g": 10 ** 9,
         "gb": 10 ** 9, "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30}
_TIME = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_ENERGY = {"": 1.0, "j": 1.0, "mj": 1e-3, "uj": 1e-6, "µj": 1e-6, "nj": 1e-9}


def _parse(text, units, what, example):
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-zµ]*)\s*", str(text))
    if not m or m.group(2).lower() not in units:
        raise argparse.ArgumentTypeError(
            f"cannot read {what} {text!r}: give a number with an optional unit "
            f"({', '.join(u for u in units if u)}), e.g. {example}")
    value = float(m.group(1)) * units[m.group(2).lower()]
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{what} must be positive, got {text!r}")
    return value


def _typed(text, convert, ok, want):
    """An argparse value: ``convert(text)`` where ``ok`` of it, else an error saying ``want``."""
    try:
        v = convert(text)
    except ValueError:
        v = None
    if v is None or not ok(v):
        raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
    return v


def positive_int(text):
    """An argparse type: an integer >= 1."""
    return _typed(text, int, lambda v: v >= 1, "a whole number >= 1")


def unit_float(text):
    """An argparse type: a number in [0, 1]."""
    return _typed(text, float, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def open_fraction(text):
    """An argparse type: a number strictly between 0 and 1."""
    return _typed(text, float, lambda v: 0 < v < 1, "a fraction between 0 and 1 (exclusive)")


def parse_bytes(text):
    return int(_parse(text, _SIZE, "a memory size", "2MiB or 500kB"))


def parse_seconds(text):
    return _parse(text, _TIME, "a time", "100us or 2ms")


def parse_joules(text):
    return _parse(text, _ENERGY, "an energy", "50uJ")


def add_budget_arguments(p, profile_default="x86-64-host"):
    g = p.add_argument_group("budget (the customizer picks l, k, alpha, the network and the "
                             "window to fit it)")
    g.add_argument("--profile", default=profile_default, metavar="TAG",
                   help=f"device profile: a tag from `tinydl devices` or a .toml path "
                        f"(default: {profile_default})")
    g.add_argument("--memory", type=parse_bytes, metavar="SIZE",
                   help="memory budget, e.g. 4MiB (default: the profile's capacity)")
    g.add_argument("--time-per-sample", type=parse_seconds, metavar="T",
                   help="per-sample transform time budget, e.g. 200us")
    g.add_argument("--rate", type=float, metavar="HZ",
                   help="sample arrival rate: transform plus updates must keep up")
    g.add_argument("--energy", type=parse_joules, metavar="J",
                   help="energy per streamed sample, e.g. 500uJ")
    g.add_argument("--target-error", type=float, metavar="E",
                   help="mean relative reconstruction error to reach; k and alpha are tuned "
                        "on ~5%% of the data")
    g.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    g.add_argument("--dictionary-dtype", dest="dictionary_dtype", default=None,
                   choices=("float32", "float64", "float16", "int8"),
                   help="how the dictionary is stored: the compute dtype (--dtype) or "
                        "narrower (default: the customizer's choice: the compute dtype unless "
                        "the memory budget needs float16 or int8)")
    g.add_argument("--dictionary-nnz", dest="dictionary_nnz", default=None, metavar="W",
                   type=_nnz,
                   help="also offer sparse int8 atoms, each kept as its W largest entries "
                        "(3 bytes an entry), when dense int8 does not fit; 'auto': W from the "
                        "data (the widest sampled row, rounded up to 8; none for dense data)")
    from ..plan import SHAPES
    g.add_argument("--shape", default=None, choices=("auto",) + SHAPES,
                   help="the plan's order of capacity: 'atoms' (the paper's: more atoms "
                        "first), 'dense' (codes of at least half the atoms, the larger "
                        "network first), or 'auto' (default with --data: 'dense' when its "
                        "learner classifies held-out rows of a 2,000-row sample of the file "
                        "better by more than 3 standard errors, else 'atoms'; 10-25 s)")


def _nnz(text):
    if text == "auto":
        return text
    try:
        w = int(text)
    except ValueError:
        w = 0
    if w < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    return w


#: the budget arguments above without a default (their dests): what a plan is made from, so
#: that a command given a plan can tell which of them it would ignore
BUDGET_ARGS = ("memory", "time_per_sample", "rate", "energy", "target_error",
               "dictionary_dtype", "dictionary_nnz", "shape")


def tuning_sample(stream, fraction=0.05, cap=2000):
    """Every ``1/fraction``-th row of the stream (at least 64, at most ``cap``) and its label:
    a sample of the whole file, not its first rows (files are often grouped by class or
    place)."""
    import numpy as np
    n = stream.n_samples
    want = int(min(n, max(64, min(cap, round(fraction * n)))))
    # rows i * n // want: spread over the whole file (a fixed step n // want, cut at want
    # rows, left up to half of it out: the last classes of a file sorted by class)
    pick = (np.arange(want, dtype=np.int64) * n) // want
    rows, labels = [], []
    for s, X, y in stream.chunks(4096, dtype=np.float64):
        lo, hi = np.searchsorted(pick, (s, s + len(X)))
        rows.append(X[pick[lo:hi] - s])
        labels.append(np.asarray(y)[pick[lo:hi] - s])
    return np.concatenate(rows), np.concatenate(labels)


def tuning_rows(stream, fraction=0.05, cap=2000):
    """The rows of :func:`tuning_sample`."""
    return tuning_sample(stream, fraction, cap)[0]


#: rows of the file the projection threshold alpha is tuned on (tinydl.customize.tune_alpha)
ALPHA_ROWS = 2000


def make_plan(args, m, n_classes, X=None, n_samples=None, scaling_rows=None, alpha_rows=None,
              row_labels=None):
    """The customizer's plan for the command's budget arguments.  ``X``: the rows
    ``--target-error`` is tuned on; ``scaling_rows``: a sample of the file (:func:`tuning_rows`)
    the standardization rule reads (:func:`tinydl.customize.scaling_rule`; None: standardize,
    the rule for data not seen); ``alpha_rows``: a larger sample alpha is tuned on
    (``tuning_sample(stream, 1.0, ALPHA_ROWS)``; None: alpha 0.3), and with ``row_labels``,
    their labels, the plan's shape (:func:`tinydl.customize.tune_shape`)."""
    import dataclasses

    from ..customize import plan, scaling_rule
    if args.target_error is not None and X is None:
        raise CommandError("--target-error needs --data (k and alpha are tuned on ~5% of it)")
    if args.rate is not None and args.rate <= 0:
        raise CommandError(f"--rate must be positive, got {args.rate}")
    rule = scaling_rule(scaling_rows) if scaling_rows is not None else None
    nnz = getattr(args, "dictionary_nnz", None)
    if nnz == "auto":  # the width from the data (none for dense rows)
        from ..customize import sparse_width
        if alpha_rows is None:
            raise CommandError("--dictionary-nnz auto needs --data (the width comes from it)")
        nnz = sparse_width(alpha_rows)
    p = plan(m, n_classes, profile=args.profile, memory_bytes=args.memory,
             time_per_sample=args.time_per_sample, rate_hz=args.rate,
             energy_per_sample=args.energy, target_error=args.target_error, X=X,
             dtype=args.dtype, backend=getattr(args, "backend", None), n_samples=n_samples,
             dictionary_dtype=getattr(args, "dictionary_dtype", None),
             standardize=None if rule is None else rule["standardize"], alpha_rows=alpha_rows,
             dictionary_nnz=nnz, row_labels=row_labels, progress=_shape_progress(args),
             shape=getattr(args, "shape", None) or "auto")
    if rule is not None:
        p = dataclasses.replace(p, reason=f"{p.reason}; scaling: {rule['rule']}")
    return p


def _shape_progress(args):
    """The progress of the shape tuning's learners (a line per run on standard error), unless
    the command is quiet or writes its JSON to standard output."""
    if getattr(args, "quiet", False) or getattr(args, "json", None) == "-":
        return None
    bar = {}

    def show(done, total):
        if "p" not in bar:
            bar["p"] = Progress(total, "plan: scoring the two plan shapes on held-out rows")
        bar["p"].update(done)
        if done >= total:
            bar["p"].close()
    return show


class Progress:
    """A one-line progress bar with an ETA on standard error (a line per 10% when standard
    error is not a terminal)."""

    def __init__(self, total, label, enabled=True):
        self.total, self.label, self.enabled = max(int(total), 1), label, enabled
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.tty = sys.stderr.isatty()
        self.next_pct = 10

    def update(self, done):
        if not self.enabled:
            return
        now = time.perf_counter()
        frac = min(1.0, done / self.total)
        if self.tty and now - self.last < 0.2 and done < self.total:
            return
        if not self.tty and frac * 100 < self.next_pct and done < self.total:
            return
        self.last = now
        el = now - self.t0
        eta = el / frac - el if frac > 0 else float("nan")
        bar = "#" * int(30 * frac)
        line = (f"{self.label} [{bar:<30}] {done}/{self.total} {100 * frac:5.1f}% "
                f"elapsed {el:6.1f}s ETA {eta:6.1f}s")
        if self.tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)
            while self.next_pct <= frac * 100:
                self.next_pct += 10

    def close(self):
        if self.enabled and self.tty:
            print(file=sys.stderr, flush=True)
