"""int8 weights with per-output-channel scales, stacked on the factorizations.

A weight array ``w`` becomes ``q = round(w / s)`` in int8 (-127..127) and float scales
``s = max |w| / 127`` taken over each output channel: each column of a 2-D (rows, cols)
factor (``dense`` W, ``factored`` U and V, ``sparse_factored`` B), each filter of a ``conv``
W, and each output column of a ``sparse_factored`` S (its ``data`` runs between ``indptr``
marks).  The scales are stored beside the array as ``<name>_scale`` (float32, one per output
channel); biases stay float.  :func:`tinydl.compress.kernels.weight` dequantizes.

Per-channel scales matter: one scale for a whole matrix lets its largest column set the step
of every other column, and a factor's columns differ by their singular values (orders of
magnitude).
"""
from __future__ import annotations

import numpy as np

from .kernels import SCALE_SUFFIX
from .model import CLayer

__all__ = ["QUANTIZABLE", "quantize_array", "quantize_layer", "is_quantized"]

#: the arrays of each layer kind that int8 quantization stores as int8
QUANTIZABLE = {"dense": ("W",), "factored": ("U", "V"), "sparse_factored": ("B", "data"),
               "conv": ("W",)}


def quantize_array(w, indptr=None):
    """``(q, scales)``: int8 values and float32 per-output-channel scales of ``w``.

    Parameters
    ----------
    w : ndarray of shape (rows, cols), (F, C, kh, kw) or (nnz,)
    indptr : ndarray of shape (n_out + 1,), optional
        For a sparse ``data`` vector: output column j owns ``w[indptr[j]:indptr[j + 1]]``.

    Returns
    -------
    q : ndarray of int8, shape of ``w``
    scales : ndarray of float32, shape (cols,), (F,) or (n_out,)
    """
    w = np.asarray(w, np.float64)
    if not np.isfinite(w).all():
        raise ValueError(f"cannot quantize an array {w.shape} holding NaN or Inf")
    if w.ndim == 2:
        amax = np.abs(w).max(axis=0) if w.shape[0] else np.zeros(w.shape[1])
        expand = lambda s: s  # noqa: E731
    elif w.ndim == 4:
        amax = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
        expand = lambda s: s[:, None, None, None]  # noqa: E731
    elif w.ndim == 1 and indptr is not None:
        indptr = np.asarray(indptr, np.int64)
        if indptr[-1] != w.size:
            raise ValueError(f"indptr ends at {int(indptr[-1])}, the values are {w.size}")
        counts = np.diff(indptr)
        amax = np.zeros(counts.size)
        has = counts > 0
        amax[has] = np.maximum.reduceat(np.abs(w), indptr[:-1][has]) if w.size else 0.0
        expand = lambda s: np.repeat(s, counts)  # noqa: E731
    else:
        raise ValueError(f"no output-channel axis for an array of shape {w.shape} "
                         "(2-D, 4-D, or 1-D with indptr)")
    scales = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / expand(scales.astype(np.float64))), -127, 127).astype(np.int8)
    return q, scales


def is_quantized(layer: CLayer) -> bool:
    """Whether any of ``layer``'s arrays is stored as int8."""
    return any(a.dtype == np.int8 for a in layer.arrays.values())


def quantize_layer(layer: CLayer) -> CLayer:
    """A copy of ``layer`` with its :data:`QUANTIZABLE` arrays in int8 (others: itself)."""
    names = QUANTIZABLE.get(layer.kind)
    if not names or is_quantized(layer):
        return layer
    arrays = dict(layer.arrays)
    for name in names:
        q, s = quantize_array(arrays[name], arrays.get("indptr") if name == "data" else None)
        arrays[name], arrays[name + SCALE_SUFFIX] = q, s
    out = CLayer(layer.kind, arrays, layer.cfg)
    if layer.in_shape:
        out.build(layer.in_shape)
    return out
