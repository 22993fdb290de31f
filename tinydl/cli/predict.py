"""``tinydl predict``: labels (or class probabilities) for new samples."""
from __future__ import annotations

import os

import numpy as np

from .evaluate import load_model, read_all

HELP = "predict labels (or probabilities) with a model from `tinydl fit`"


def add_arguments(p):
    p.add_argument("model", metavar="MODEL_DIR", help="the directory `tinydl fit -o` wrote")
    p.add_argument("--data", required=True, metavar="PATH",
                   help="samples: .npz (X_test, else X), .npy or .csv (a label column, if "
                        "any, is the last one unless --label-column says otherwise)")
    p.add_argument("--label-column", type=int, metavar="N")
    p.add_argument("--proba", action="store_true", help="write class probabilities")
    p.add_argument("-o", "--output", metavar="PATH",
                   help="write the predictions: .npy or .csv (default: print them)")
    p.add_argument("--backend", metavar="NAME")


def run(args):
    from ..io import atomic_write_bytes, atomic_write_text
    from . import CommandError, emit_json
    model = load_model(args.model, args.backend)
    X, _ = read_all(args, need_labels=False, dtype=model.dtype)
    if X.shape[1] != model.n_features_in_:
        raise CommandError(f"{args.data} has {X.shape[1]} features; the model was trained on "
                           f"{model.n_features_in_}")
    out = model.predict_proba(X) if args.proba else model.predict(X)
    if args.output:
        ext = os.path.splitext(args.output)[1].lower()
        if ext == ".npy":
            import io
            buf = io.BytesIO()
            np.save(buf, out, allow_pickle=False)
            atomic_write_bytes(args.output, buf.getvalue())
        elif ext == ".csv":
            fmt = "%.6g" if args.proba else "%d"
            rows = np.atleast_2d(out.T).T
            text = "\n".join(",".join(fmt % v for v in r) for r in rows) + "\n"
            atomic_write_text(args.output, text)
        else:
            raise CommandError(f"--output must end in .npy or .csv, got {args.output}")
    if args.json:
        emit_json(dict(model=args.model, n_samples=int(len(X)), predictions=out), args.json)
        return 0
    if args.output:
        print(f"{len(X)} predictions written to {args.output}")
    else:
        for r in np.atleast_2d(out.T).T:
            print(",".join(f"{v:.6g}" for v in np.atleast_1d(r)))
    return 0
