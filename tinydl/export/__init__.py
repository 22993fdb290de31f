"""Export a model's execution phase as dependency-free C99 (``tinydl export --target c``).

:func:`export_c` writes, into a directory:

* ``tinydl_model.c`` / ``tinydl_model.h``: the weights (``const``: flash), every working
  buffer (``static``, sized at export) and ``int tinydl_predict(const float *x, float *scores)``;
* ``tinydl_runtime.c`` / ``tinydl_runtime.h`` / ``tinydl_config.h``: the kernels the model
  uses (standardization, OMP with the Gram matrix and Batch-OMP's progressive Cholesky, the
  network's layers); no ``malloc``, no libm beyond ``sqrtf``/``expf``;
* ``README.md``: what it computes, and the flash and RAM it needs (:mod:`.footprint`).

Models: a fitted :class:`~tinydl.learner.TinyDLClassifier` (standardization, OMP on the
learned dictionary, the network on the scaled codes, argmax: :mod:`.program`), or a
:class:`~tinydl.compress.CompressedModel` from ``tinydl compress``.  Weights in float32, or
int8 with per-channel scales calibrated on data the caller gives (:mod:`.quantize`).
:mod:`.toolchain` builds and runs an export (host ``cc``; Cortex-M3 under QEMU).
"""
from __future__ import annotations

import os
import shutil
from typing import Dict, Optional

import numpy as np

from . import emit
from .footprint import footprint, predict_tinydl_footprint
from .program import program_of

__all__ = ["export_c", "load_exportable", "footprint", "predict_tinydl_footprint",
           "WEIGHT_DTYPES"]

WEIGHT_DTYPES = ("float32", "int8")
_HERE = os.path.dirname(os.path.abspath(__file__))


def load_exportable(path):
    """A model to export from ``path``: a ``tinydl fit`` model directory (a
    :class:`TinyDLClassifier` checkpoint) or a compressed model ``.npz`` (``tinydl compress``;
    a plain network ``.npz`` is read as one too)."""
    if os.path.isdir(path):
        from ..learner import TinyDLClassifier
        model = TinyDLClassifier.load(path)
        model._check_fitted()
        return model
    if not os.path.isfile(path):
        raise OSError(f"no model at {path}: expected a `tinydl fit` directory or a "
                      "`tinydl compress` .npz")
    from ..compress import load_any_model
    return load_any_model(path)


def export_c(model, out_dir, weights: str = "float32", calibrate: Optional[np.ndarray] = None,
             check=None) -> Dict:
    """Write the C export of ``model`` into ``out_dir``.

    Parameters
    ----------
    model : TinyDLClassifier or CompressedModel
        Fitted.
    out_dir : str
        Created if absent; the export's files are replaced.
    weights : {"float32", "int8"}
        int8: each weight row (output unit, filter, atom) as int8 with a float32 scale.
    calibrate : ndarray of shape (n_samples, n_features), required for int8
        Samples the model takes (raw features); the per-channel scales are chosen to fit the
        layers' outputs on them (the first 1,024 rows).
    check : callable, optional
        Called with the predicted footprint (``flash_bytes``, ``ram_bytes`` and their parts)
        before anything is written: it raises to refuse the export (``tinydl export
        --profile``: a board it does not fit leaves no files behind).

    Returns
    -------
    dict
        ``out_dir``, ``files``, ``weights`` (the type the weights are stored in: ``"float32"``,
        ``"int8"``, or ``"float32 and int8"`` for a compressed model that stores some layers
        as int8), ``flash_bytes``, ``ram_bytes`` (predicted) and their parts.
    """
    if weights not in WEIGHT_DTYPES:
        raise ValueError(f"weights must be one of {WEIGHT_DTYPES}, got {weights!r}")
    prog = program_of(model)
    if weights == "int8":
        if calibrate is None:
            raise ValueError("int8 weights need calibration data (samples the model takes, "
                             f"shape (n, {prog['n_features']})): pass calibrate=X")
        from .quantize import quantize_program
        quantize_program(prog, model, calibrate)
    L = emit.layout(prog)
    fp = footprint(L)
    # a compressed model may store some weights as int8 already (tinydl compress): kept
    kinds = {"int8" if name.endswith("_q") else "float32" for name, _ in L.consts
             if name.endswith(("_q", "_f"))}
    stored = kinds.pop() if len(kinds) == 1 else "float32 and int8"
    if check is not None:
        check(dict(fp))
    texts = {"tinydl_model.c": emit.model_c(prog, L, stored),
             "tinydl_model.h": emit.model_h(prog, L, fp),
             "tinydl_config.h": emit.config_h(L)}
    from ..io import atomic_write_text
    os.makedirs(out_dir, exist_ok=True)
    for name in ("tinydl_runtime.c", "tinydl_runtime.h"):
        shutil.copyfile(os.path.join(_HERE, name), os.path.join(out_dir, name))
    for name, text in texts.items():
        atomic_write_text(os.path.join(out_dir, name), text)
    from .readme import readme_text
    info = {"out_dir": os.fspath(out_dir), "weights": stored, "source": prog["source"],
            "n_features": prog["n_features"], "n_outputs": prog["n_outputs"],
            "ops": [op["kind"] for op in prog["ops"]], **fp}
    atomic_write_text(os.path.join(out_dir, "README.md"), readme_text(prog, info))
    info["files"] = sorted(["README.md", "tinydl_runtime.c", "tinydl_runtime.h"] + list(texts))
    return info
