"""int8 weights with per-channel scales, calibrated on data the user gives.

Each row of a weight matrix (one output unit, filter or dictionary atom: a channel) is stored
as int8 ``q`` and one float32 scale ``s``: ``w ~ s q``, ``q = round(w / s)`` clipped to
[-127, 127], ``s = f max|w| / 127``.  The clip factor ``f`` is chosen per channel among
:data:`FACTORS` (the rule of :mod:`hal.quantize`, shared with the stored int8 dictionaries,
which minimise the reconstruction error instead) to minimise the error of that channel's
*outputs* on the calibration inputs,
``|| X (w - s q) ||^2`` (X: the inputs the layer sees on the user's data), so that a row with a
few large weights the data rarely excites is clipped, and one whose large weights matter is
not.  Without inputs for a layer (convolutions, a sparse layer's values) ``f = 1``.

Dictionary atoms keep unit norm (``s = 1 / |q|``): OMP's argmax compares correlations with
atoms of equal norm, as in float.  The Gram matrix is recomputed from the quantized atoms.
Products accumulate in float (:file:`tinydl_runtime.c`), so int8 changes only the weights.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from hal.quantize import CLIP_FACTORS, clip_rows, int8_rows

from .program import Mat, forward_dense

__all__ = ["FACTORS", "quantize_rows", "quantize_program", "CALIBRATION_ROWS"]

#: clip factors tried per channel (fractions of the channel's largest |weight|)
FACTORS = CLIP_FACTORS
#: calibration rows used at most (the first ones given)
CALIBRATION_ROWS = 1024


def _quant(W, f, unit_norm):
    q, s = int8_rows(W, f)
    if unit_norm:
        nq = np.linalg.norm(q.astype(np.float64), axis=1)
        s = np.where(nq > 0, 1.0 / np.where(nq > 0, nq, 1.0), 1.0).astype(np.float32)
    return q, s


def quantize_rows(W, X: Optional[np.ndarray] = None, unit_norm: bool = False) -> Mat:
    """int8 rows of ``W`` (rows, n) with per-row scales.

    Parameters
    ----------
    W : ndarray of shape (rows, n)
    X : ndarray of shape (n_samples, n), optional
        The inputs the rows multiply (calibration); without them every row keeps ``f = 1``.
    unit_norm : bool
        Scales that give each dequantized row unit norm (dictionary atoms).

    Returns
    -------
    Mat
    """
    W = np.asarray(W, np.float64)
    if X is None or not len(X) or not W.size:
        q, s = _quant(W, 1.0, unit_norm)
        return Mat(q=q, s=s)
    X = np.asarray(X, np.float64)

    def err(q, s):
        return np.square(X @ (W - q * s[:, None]).T).sum(axis=0)

    q, s = clip_rows(W, err, quant=lambda a, f: _quant(a, f, unit_norm))
    return Mat(q=q, s=s)


def _quant_ragged(m: Mat) -> Mat:
    """A sparse layer's values, one scale per column (its run of ``indptr``), f = 1."""
    v = m.f.astype(np.float64)
    rows = m.row_of()
    n = len(m.indptr) - 1
    amax = np.zeros(n)
    np.maximum.at(amax, rows, np.abs(v))
    s = amax / 127.0
    s[s == 0] = 1.0
    q = np.clip(np.rint(v / s[rows]), -127, 127).astype(np.int8)
    return Mat(q=q, s=s.astype(np.float32), indptr=m.indptr)


def quantize_program(prog, model, X) -> None:
    """Replace every weight matrix of ``prog`` by int8 rows, calibrated on the raw samples
    ``X`` (n_samples, n_features) the model takes (the first :data:`CALIBRATION_ROWS`)."""
    X = np.asarray(X, np.float32)
    if X.ndim != 2 or X.shape[1] != prog["n_features"] or not len(X):
        raise ValueError(f"calibration data has shape {X.shape}; the model takes "
                         f"(n_samples, {prog['n_features']}) with n_samples >= 1")
    if not np.isfinite(X).all():
        raise ValueError("calibration data contains NaN or Inf")
    X = X[:CALIBRATION_ROWS]
    ops = prog["ops"]
    if prog["source"] == "TinyDLClassifier":
        _quantize_tinydl(ops, model, X)
    else:
        _quantize_compressed(ops, model, X)


def _quantize_tinydl(ops, clf, X):
    Xs = clf.standardizer_.transform(X) if clf.standardizer_.enabled else X
    codes = clf.transform(X).astype(np.float32)
    for op in ops:
        if op["kind"] == "omp" and op["l"]:
            D = quantize_rows(op["D"].f, Xs, unit_norm=True)
            op["D"] = D
            Dh = D.dense().astype(np.float64)
            op["G"] = (Dh @ Dh.T).astype(np.float32)
    gi = next(i for i, op in enumerate(ops) if op["kind"] == "gather")
    inputs = {}
    forward_dense(ops, codes, gi, record=lambda i, op, x: inputs.__setitem__(i, x))
    for i in range(gi, len(ops)):
        op = ops[i]
        if op["kind"] == "gather":
            g = op["W"]
            qt = quantize_rows(g.f.T, inputs[i] * np.float32(op["vscale"]))
            m = Mat(q=qt.q.T, s=qt.s)
            m.by_column = True
            op["W"] = m
        elif op["kind"] == "dense":
            op["W"] = quantize_rows(op["W"].f, inputs[i])


def _quantize_compressed(ops, cm, X):
    # each op's input: the model's layers run up to it (flatten is no op of its own); a
    # weight the model already stores as int8 (tinydl compress) is kept as it is
    layer_of = [i for i, la in enumerate(cm.layers) if la.kind != "flatten"]
    Xin = X.reshape((len(X),) + cm.input_shape)
    for op, li in zip(ops, layer_of):
        k = op["kind"]
        if k not in ("dense", "factored", "sparse", "conv", "ksep"):
            continue
        x = cm.forward_range(Xin, 0, li).reshape(len(X), -1).astype(np.float64)

        def q(name, inputs=None):
            if op[name].f is not None:
                op[name] = quantize_rows(op[name].f, inputs)

        if k == "dense":
            q("W", x)
        elif k == "factored":
            q("V", x @ op["U"].dense().T.astype(np.float64))
            q("U", x)
        elif k == "sparse":
            q("B", x)
            if op["data"].f is not None:
                op["data"] = _quant_ragged(op["data"])
        elif k == "conv":
            q("W")
        else:
            q("v")
            q("h")
