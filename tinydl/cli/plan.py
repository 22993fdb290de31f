"""``tinydl plan``: choose l, k, alpha, the network, the window and the schedule for a
profile and a budget, and show the predicted memory, time and energy."""
from __future__ import annotations

import numpy as np

from ._common import ALPHA_ROWS, add_budget_arguments, make_plan, tuning_rows, tuning_sample

HELP = "choose a TinyDL configuration for a device profile and a memory/time/energy budget"


def add_arguments(p):
    src = p.add_argument_group("what is learned (--data, or --m with --classes)")
    src.add_argument("--data", metavar="PATH",
                     help="training data (.npz, .npy with --labels, .csv): gives m and the "
                          "classes, and the sample --target-error is tuned on")
    src.add_argument("--labels", metavar="PATH", help="labels .npy for a .npy of features")
    src.add_argument("--m", type=int, help="features per sample")
    src.add_argument("--classes", type=int, help="number of classes")
    add_budget_arguments(p)
    p.add_argument("-o", "--output", metavar="PLAN.json",
                   help="write the plan for `tinydl fit --plan`")
    p.add_argument("--explain", action="store_true",
                   help="list the candidates weighed and why the plan won")


def run(args):
    from . import CommandError, emit_json
    X = rows = None
    n_samples = None
    if args.data:
        from ..data import open_stream
        st = open_stream(args.data, labels=args.labels)
        m, n_classes = st.n_features, int(np.unique(st.y).size)
        n_samples = st.n_samples
        # a sample of the whole file: the standardization rule, and --target-error's tuning
        rows = tuning_rows(st)
        if args.target_error is not None:
            X = rows
    else:
        if args.m is None or args.classes is None:
            raise CommandError("give --data, or both --m and --classes")
        m, n_classes = args.m, args.classes
    sample = (None, None) if rows is None else tuning_sample(st, 1.0, ALPHA_ROWS)
    plan = make_plan(args, m, n_classes, X, n_samples=n_samples, scaling_rows=rows,
                     alpha_rows=sample[0], row_labels=sample[1])
    if args.output:
        plan.save(args.output)
    if args.json:
        out = plan.to_dict()
        if args.explain:
            out["explain"] = plan.explain()
        emit_json(out, args.json)
        if args.json == "-":
            return 0
    print(plan.explain() if args.explain else plan.summary())
    if args.output:
        print(f"plan written to {args.output} (use: tinydl fit DATA --plan {args.output} -o "
              "MODEL_DIR)")
    return 0
