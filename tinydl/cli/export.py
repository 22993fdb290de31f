"""``tinydl export``: a model's execution phase as dependency-free C (for a microcontroller)."""
from __future__ import annotations

HELP = "export a model's execution phase as C99 (no malloc; weights in flash) for a microcontroller"


def add_arguments(p) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="a `tinydl fit` model directory, or a `tinydl compress` .npz")
    p.add_argument("--target", choices=("c",), default="c",
                   help="what to write (c: C99 sources, a header and a README)")
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="directory for the sources (created; its export files are replaced)")
    p.add_argument("--weights", choices=("float32", "int8"), default="float32",
                   help="weight type: int8 with per-channel scales needs --calibrate")
    p.add_argument("--calibrate", metavar="DATA.npz",
                   help="samples for the int8 scales: .npz with X_train, X or X_val (or .npy)")
    p.add_argument("--profile", metavar="TAG",
                   help="check the predicted flash and RAM against a device profile's "
                        "(e.g. cortex-m3)")


def _calibration(path, n_features):
    import numpy as np

    from ..data.files import check_finite, read_arrays
    key, X = next(iter(read_arrays(path, (("X_train",), ("X",), ("X_val",)),
                                   "calibration data").items()))
    if X.dtype.kind not in "biuf":
        from ..errors import DataError
        raise DataError(f"{path}: {key} holds {X.dtype} values; calibration samples must be "
                        "numbers")
    X = X.reshape(len(X), -1) if X.ndim > 2 and X[0].size == n_features else X
    if X.ndim == 2:
        # the preprocessing fit, evaluate and predict apply to the same file (UJIIndoorLoc's
        # RSSI coding): the scales must fit the values the model takes
        from ..data.stream import _convert, detect_preprocessing
        X = _convert(detect_preprocessing(X), X, np.float32 if X.dtype.itemsize <= 4
                     else np.float64, path)
        check_finite(X, path, key)
    return X


def run(args) -> int:
    from ..export import export_c, load_exportable
    from . import CommandError, emit_json
    model = load_exportable(args.model)
    X = None
    if args.calibrate:
        from ..export.program import program_of
        X = _calibration(args.calibrate, program_of(model)["n_features"])
    elif args.weights == "int8":
        raise CommandError("--weights int8 needs --calibrate DATA (samples the model takes)")
    fit = {}
    check = None
    if args.profile:  # checked before anything is written: a refused export leaves no files
        from hal.profile import load_profile
        prof = load_profile(args.profile)
        ram = int(prof.memory.capacity_bytes)
        flash = getattr(prof.memory, "flash_bytes", None)

        def check(fp):
            fit["profile"] = prof.tag
            fit["fits"] = bool(fp["ram_bytes"] <= ram and (flash is None
                                                           or fp["flash_bytes"] <= flash))
            if not fit["fits"]:
                raise CommandError(f"the export needs {fp['flash_bytes']:,} bytes of flash "
                                   f"and {fp['ram_bytes']:,} of RAM; {prof.tag} has "
                                   f"{flash or 0:,} and {ram:,} (nothing written)")
    info = export_c(model, args.output, weights=args.weights, calibrate=X, check=check)
    info.update(fit)
    if args.json is not None:
        emit_json(info, args.json)
    else:
        print(f"wrote {', '.join(info['files'])} to {info['out_dir']}: "
              f"{' -> '.join(info['ops'])}; {args.weights} weights; predicted flash "
              f"{info['flash_bytes']:,} bytes, RAM {info['ram_bytes']:,} bytes")
    return 0
