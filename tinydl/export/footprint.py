"""Flash and RAM of a C export, predicted from the model's shapes before anything is compiled.

* flash: every constant (weights, scales, Gram matrix, statistics; each array 4-byte aligned)
  plus the ``tdl_mat`` descriptors, plus the code: each kernel the model uses
  (:data:`KERNEL_CODE_BYTES`) and the calls of ``tinydl_predict`` (:data:`CALL_CODE_BYTES`
  each);
* RAM: every static buffer (the standardized sample, OMP's workspace ``l + k l + k^2 + 4 k``
  floats and the code, the two activation buffers, a factorized layer's intermediate).

The code sizes are those of ``arm-none-eabi-gcc`` 12 at ``-O2 -mcpu=cortex-m3 -mthumb``
(:mod:`.toolchain`'s flags) for :file:`tinydl_runtime.c`'s kernels; the weights dominate
(the UJIIndoorLoc model: ~490 KB of constants, ~2.5 KB of code), so another compiler moves
the total by well under 1%.  The figures leave out the caller's stack (the kernels are
leaves with frames of < 100 bytes), the C library's soft-float routines and ``sqrtf``/``expf``
(a few KB, linked once per firmware), and the caller's input and score arrays.

:func:`predict_tinydl_footprint` gives the same figures from a plan's settings (``m``, ``l``,
``k``, the hidden layers, the classes) for the customizer's ``cortex-m3`` plans.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

__all__ = ["footprint", "predict_tinydl_footprint", "KERNEL_CODE_BYTES", "CALL_CODE_BYTES"]

#: code bytes of each kernel of tinydl_runtime.c (arm-none-eabi-gcc 12.2, -O2, Cortex-M3)
KERNEL_CODE_BYTES = {"BASE": 56, "STANDARDIZE": 56, "OMP": 1300, "GATHER": 304, "DENSE": 232,
                     "SPARSE": 192, "CONV": 564, "KSEP": 1016, "POOL": 364, "RELU": 52,
                     "TANH": 144, "SIGMOID": 160, "SOFTMAX": 132,
                     # int8 weights: the int8-to-float table (1 KB) and slightly longer loops
                     "I8": 1040}
#: code bytes of one kernel call in tinydl_predict (arguments, the call, literal pool)
CALL_CODE_BYTES = 28


def footprint(L) -> Dict[str, int]:
    """Predicted bytes of a laid-out export (:func:`.emit.layout`).

    Returns
    -------
    dict
        ``flash_bytes`` (``const_bytes + code_bytes``), ``ram_bytes``, ``const_bytes``,
        ``code_bytes``.
    """
    code = KERNEL_CODE_BYTES["BASE"] + sum(KERNEL_CODE_BYTES[n] for n in L.needs) \
        + CALL_CODE_BYTES * (len(L.calls) + 1)
    const = L.flash_const_bytes
    return {"flash_bytes": int(const + code), "ram_bytes": int(L.ram_bytes),
            "const_bytes": int(const), "code_bytes": int(code)}


def predict_tinydl_footprint(m: int, n_classes: int, l: int, k: int,
                             hidden_layer_sizes: Sequence[int], weights: str = "float32",
                             standardize: bool = True, activation: str = "relu"
                             ) -> Dict[str, int]:
    """:func:`footprint` of the export of a :class:`~tinydl.learner.TinyDLClassifier` with
    these settings (a full dictionary of ``l`` atoms; no model needed).

    Parameters
    ----------
    m, n_classes, l, k : int
    hidden_layer_sizes : sequence of int
    weights : {"float32", "int8"}
    standardize : bool
    activation : {"relu", "tanh", "sigmoid"}

    Returns
    -------
    dict
        As :func:`footprint`.
    """
    from .emit import layout
    from .program import Mat

    def mat(rows, cols, by_column=False):
        if weights == "float32":
            mt = Mat(f=np.zeros((rows, cols), np.float32))
        else:
            mt = Mat(q=np.zeros((rows, cols), np.int8),
                     s=np.zeros(cols if by_column else rows, np.float32))
        mt.by_column = by_column
        return mt

    if weights not in ("float32", "int8"):
        raise ValueError(f"weights must be 'float32' or 'int8', got {weights!r}")
    sizes = [int(h) for h in hidden_layer_sizes] + [int(n_classes)]
    ops = []
    if standardize:
        ops.append({"kind": "standardize", "mean": np.zeros(m, np.float32),
                    "scale": np.zeros(m, np.float32), "n": m})
    kk = int(min(k, l))
    ops.append({"kind": "omp", "D": mat(l, m), "G": np.zeros((l, l), np.float32), "k": kk,
                "l": int(l), "m": int(m), "tol2": -1.0})
    ops.append({"kind": "gather", "W": mat(l, sizes[0], by_column=True),
                "b": np.zeros(sizes[0], np.float32), "n": sizes[0], "vscale": 1.0})
    for a, b in zip(sizes[:-1], sizes[1:]):
        ops.append({"kind": activation, "n": a})
        ops.append({"kind": "dense", "W": mat(b, a), "b": np.zeros(b, np.float32), "n": b})
    prog = {"ops": ops, "n_features": m, "n_outputs": int(n_classes),
            "classes": np.arange(n_classes), "source": "TinyDLClassifier"}
    return footprint(layout(prog))
