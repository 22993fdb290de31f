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
    import os

    import numpy as np

    from ..errors import ModelFileError
    if not os.path.isfile(path):
        raise OSError(f"no such calibration file: {path}")
    try:
        if path.endswith(".npy"):
            X = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as z:
                key = next((k for k in ("X_train", "X", "X_val") if k in z.files), None)
                if key is None:
                    raise ValueError(f"{path} holds {sorted(z.files)}; expected X_train, X or "
                                     "X_val")
                X = z[key]
    except (OSError, EOFError) as exc:
        raise ModelFileError(f"{path} is not a readable .npz/.npy ({exc})") from None
    X = np.asarray(X)
    return X.reshape(len(X), -1) if X.ndim > 2 and X[0].size == n_features else X


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
    info = export_c(model, args.output, weights=args.weights, calibrate=X)
    if args.profile:
        from hal.profile import load_profile
        prof = load_profile(args.profile)
        ram = int(prof.memory.capacity_bytes)
        flash = getattr(prof.memory, "flash_bytes", None)
        info["profile"] = prof.tag
        info["fits"] = bool(info["ram_bytes"] <= ram and (flash is None
                                                          or info["flash_bytes"] <= flash))
        if not info["fits"]:
            raise CommandError(f"the export needs {info['flash_bytes']:,} bytes of flash and "
                               f"{info['ram_bytes']:,} of RAM; {prof.tag} has {flash or 0:,} "
                               f"and {ram:,}")
    if args.json is not None:
        emit_json(info, args.json)
    else:
        print(f"wrote {', '.join(info['files'])} to {info['out_dir']}: "
              f"{' -> '.join(info['ops'])}; {args.weights} weights; predicted flash "
              f"{info['flash_bytes']:,} bytes, RAM {info['ram_bytes']:,} bytes")
    return 0
