"""``tinydl compress``: compress a trained network for inference, without retraining."""
from __future__ import annotations

import os

from ._common import parse_bytes, parse_seconds

HELP = "compress a trained model (SparseSep: SVD, sparse dictionary, kernel separation)"


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="a tinydl classifier (.npz, from fit/save), a compressed model "
                             "(.npz) or an ONNX MLP/CNN (.onnx)")
    parser.add_argument("--data", required=True, metavar="VAL.npz",
                        help="validation data: X_val, y_val (or X, y; or X_test, y_test)")
    parser.add_argument("--max-accuracy-loss", type=float, default=0.01, metavar="FRACTION",
                        help="allowed drop in validation accuracy, as a fraction "
                             "(0.01 = 1 point; default 0.01)")
    parser.add_argument("--method", choices=("svd", "sparse", "auto"), default="svd",
                        help="dense layers by SVD only, also by sparse dictionary, or per "
                             "layer the smallest of data-aware SVD, plain SVD and sparse")
    parser.add_argument("--quantize", choices=("int8",), default=None,
                        help="stack int8 weights (per-output-channel scales) on the forms")
    parser.add_argument("--criterion", choices=("lost", "flips", "accuracy", "paired"),
                        default="lost",
                        help="what the budget bounds on validation: samples right before and "
                             "wrong after (default), changed predictions, the accuracy "
                             "drop, or the drop with a paired (McNemar) standard error for "
                             "--confidence")
    parser.add_argument("--confidence", type=float, default=0.0, metavar="Z",
                        help="hold the Wilson upper limit of the lost (or flips) rate, or the "
                             "paired drop plus Z paired standard errors, at Z standard errors "
                             "to the budget, a margin for a small validation set (default 0: "
                             "the rate itself)")
    parser.add_argument("--refine", type=int, default=0, metavar="STEPS",
                        help="Adam steps of label-free refinement of a data-aware SVD rank "
                             "whose plain factors miss the budget, towards the original "
                             "network's outputs on the fitting inputs (MLPs; default 0: off)")
    parser.add_argument("--refine-seeds", type=int, default=1, metavar="S",
                        help="a refined form passes only if it passes under each of S "
                             "refinement seeds (default 1)")
    parser.add_argument("--fit-data", metavar="FIT.npz",
                        help="unlabelled inputs (X_fit, or X / X_train) the data-aware forms "
                             "are fitted to (default: the validation inputs)")
    parser.add_argument("--weights-only", action="store_true",
                        help="fit factorizations to W alone (default: to the layers' outputs "
                             "on the validation inputs)")
    parser.add_argument("--profile", metavar="TAG", help="device profile for the targets, "
                        "e.g. cortex-m3")
    parser.add_argument("--max-memory", type=parse_bytes, metavar="SIZE",
                        help="bytes the compressed weights may take, e.g. 65536 or 64KiB")
    parser.add_argument("--max-time", type=parse_seconds, metavar="T",
                        help="time per sample predicted on --profile, e.g. 0.002, 2ms or "
                             "200us (a bare number: seconds)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.{npz,onnx}")


def _numbers(path, key, X):
    from ..data.files import check_finite
    from ..errors import DataError
    if X.dtype.kind not in "biuf":
        raise DataError(f"{path}: {key} holds {X.dtype} values; expected numbers")
    if X.ndim >= 2 and X.dtype.kind == "f":
        check_finite(X.reshape(len(X), -1), path, key)
    return X


def _load_val(path):
    from ..data.files import read_arrays
    from ..errors import DataError
    if str(path).lower().endswith(".npy"):
        raise DataError(f"{path}: validation data needs labels: a .npz with X_val and y_val "
                        "(or X, y)")
    arrs = read_arrays(path, (("X_val", "y_val"), ("X", "y"), ("X_test", "y_test")),
                       "validation data")
    (xk, X), (_, y) = arrs.items()
    return _numbers(path, xk, X), y


def _load_fit(path):
    from ..data.files import read_arrays
    ((key, X),) = read_arrays(path, (("X_fit",), ("X",), ("X_train",)), "fit data").items()
    return _numbers(path, key, X)


def run(args) -> int:
    from ..compress import compress_model, export_onnx, load_any_model, save_model
    from . import CommandError, emit_json
    out_ext = os.path.splitext(args.output)[1].lower()
    if out_ext not in (".npz", ".onnx"):
        raise CommandError(f"output must end in .npz or .onnx, got {args.output!r}")
    model = load_any_model(args.model)
    X, y = _load_val(args.data)
    X_fit = _load_fit(args.fit_data) if args.fit_data else None
    cm, rep = compress_model(model, X, y, args.max_accuracy_loss, method=args.method,
                             data_aware=not args.weights_only, profile=args.profile,
                             max_memory=args.max_memory, max_time=args.max_time,
                             quantize=args.quantize, criterion=args.criterion, X_fit=X_fit,
                             confidence=args.confidence, refine=args.refine,
                             refine_seeds=args.refine_seeds)
    if out_ext == ".onnx":
        export_onnx(cm, args.output)
    else:
        save_model(cm, args.output)
    if args.json is not None:
        d = rep.to_dict()
        d["output"] = args.output
        emit_json(d, args.json)
    else:
        print(rep.text())
        print(f"wrote {args.output}")
    return 0
