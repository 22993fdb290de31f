"""``tinydl evaluate``: accuracy and per-sample execution time of a trained model."""
from __future__ import annotations

import time

import numpy as np

HELP = "score a model from `tinydl fit` on labelled data: accuracy and execution time"


def add_arguments(p):
    p.add_argument("model", metavar="MODEL_DIR", help="the directory `tinydl fit -o` wrote")
    p.add_argument("--data", required=True, metavar="PATH",
                   help="labelled data: .npz (X_test, y_test, else X, y), .npy with "
                        "--labels, or .csv")
    p.add_argument("--labels", metavar="PATH", help="labels .npy for a .npy of features")
    p.add_argument("--label-column", type=int, metavar="N")
    p.add_argument("--profile", metavar="TAG",
                   help="also predict the execution time and energy on this profile")
    p.add_argument("--backend", metavar="NAME")


def load_model(path, backend=None):
    """The learner in a model directory, with a clear error when it is not one."""
    import os

    from ..learner import TinyDLClassifier
    from . import CommandError
    if not os.path.isdir(path):
        raise CommandError(f"no model directory at {path} (train one with tinydl fit -o DIR)")
    model = TinyDLClassifier.load(path, backend=backend)
    model._check_fitted()
    return model


def read_all(args, need_labels, dtype):
    from ..data import open_stream
    st = open_stream(args.data, split="test" if need_labels else "any",
                     labels=getattr(args, "labels", None),
                     label_column=getattr(args, "label_column", None),
                     need_labels=need_labels)
    parts = [X for _, X, _ in st.chunks(8192, dtype=dtype)]
    X = np.concatenate(parts)
    return X, st.y


def run(args):
    from . import CommandError, emit_json
    model = load_model(args.model, args.backend)
    X, y = read_all(args, need_labels=True, dtype=model.dtype)
    if X.shape[1] != model.n_features_in_:
        raise CommandError(f"{args.data} has {X.shape[1]} features; the model was trained on "
                           f"{model.n_features_in_}")
    unknown = np.setdiff1d(np.unique(y), model.classes_)
    t0 = time.perf_counter()
    pred = model.predict(X)
    batch_s = time.perf_counter() - t0
    n1 = min(len(X), 200)
    t0 = time.perf_counter()
    for i in range(n1):
        model.predict(X[i:i + 1])
    single_us = (time.perf_counter() - t0) / n1 * 1e6
    acc = float(np.mean(pred == y))
    result = dict(model=args.model, backend=model.backend_, data=args.data,
                  n_samples=int(len(X)), accuracy=acc,
                  unknown_classes=unknown.tolist(), batch_us_per_sample=batch_s / len(X) * 1e6,
                  single_us_per_sample=single_us, n_params=int(model.n_params_),
                  n_atoms=int(model.transform_.n_atoms_))
    if args.profile:
        from hal.cost import predict_inference
        sizes = [model.l, *model.hidden_layer_sizes, len(model.classes_)]
        p = predict_inference(args.profile, sizes, 1, model.dtype,
                              transform=(model.n_features_in_, model.l, model.k))
        result["predicted"] = dict(profile=args.profile, us_per_sample=p.seconds * 1e6,
                                   uj_per_sample=p.joules * 1e6, peak_bytes=p.peak_bytes)
    if args.json:
        emit_json(result, args.json)
        if args.json == "-":
            return 0
    print(f"accuracy {acc:.4f} on {len(X)} samples of {args.data}")
    if unknown.size:
        print(f"  note: {unknown.size} label(s) never seen in training: {unknown[:5].tolist()}")
    print(f"execution: {single_us:.1f} us/sample one at a time, "
          f"{result['batch_us_per_sample']:.2f} us/sample in one batch (this machine)")
    if args.profile:
        pr = result["predicted"]
        print(f"predicted on {args.profile}: {pr['us_per_sample']:.1f} us/sample, "
              f"{pr['uj_per_sample']:.2f} uJ/sample, peak {pr['peak_bytes']:,} bytes")
    return 0
